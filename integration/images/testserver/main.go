// Command testserver is the workload of the node tests. Images hold no shell,
// so it is also the client and the tool run through `kubectl exec`:
//
//	testserver serve [-port 8080] [-append FILE=LINE] [-tls-self-signed NAME] [-upstream URL]
//	                                                    answer HTTP (or HTTPS with an ephemeral
//	                                                    self-signed certificate for NAME) with the host name;
//	                                                    /upstream answers with the body of GET URL
//	testserver get [-cacert FILE] [-insecure] URL      print the body of GET URL ($VARS expanded);
//	                                                    -insecure: TLS without verifying the server
//	testserver append FILE LINE                         append a line to a file and exit
//	testserver cat FILE                                 print a file
//	testserver echo WORDS...                            print the words
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: testserver serve|get|append|cat|echo [arguments]")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return serve(rest)
	case "get":
		fs := flag.NewFlagSet("get", flag.ContinueOnError)
		caFile := fs.String("cacert", "", "PEM file of the CA that signed the server certificate")
		insecure := fs.Bool("insecure", false, "TLS without verifying the server (and without a client certificate)")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: testserver get [-cacert FILE] [-insecure] URL")
		}
		return get(os.ExpandEnv(fs.Arg(0)), *caFile, *insecure)
	case "append":
		if len(rest) != 2 {
			return errors.New("usage: testserver append FILE LINE")
		}
		return appendLine(rest[0], rest[1])
	case "cat":
		if len(rest) != 1 {
			return errors.New("usage: testserver cat FILE")
		}
		b, err := os.ReadFile(rest[0]) //nolint:gosec // a test tool reading what it is told.
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	case "echo":
		fmt.Println(strings.Join(rest, " "))
		return nil
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	port := fs.Int("port", 8080, "TCP port to listen on")
	appendSpec := fs.String("append", "", "FILE=LINE to append before serving")
	selfSigned := fs.String("tls-self-signed", "", "serve HTTPS with an ephemeral self-signed certificate for this name")
	upstream := fs.String("upstream", "", "URL whose body /upstream returns (a backend reached through the mesh)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	if *appendSpec != "" {
		file, line, ok := strings.Cut(*appendSpec, "=")
		if !ok {
			return errors.New("-append wants FILE=LINE")
		}
		if err := appendLine(file, line); err != nil {
			return err
		}
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/upstream", func(w http.ResponseWriter, r *http.Request) {
		if *upstream == "" {
			http.Error(w, "no -upstream", http.StatusNotFound)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, *upstream, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Warn("upstream", "url", *upstream, "error", err)
			http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		_, _ = fmt.Fprintf(w, "%s via %s: ", host, *upstream)
		_, _ = io.Copy(w, resp.Body)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Info("request", "remote", r.RemoteAddr, "path", r.URL.Path)
		_, _ = fmt.Fprintf(w, "hello from %s\n", host)
	})
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", fmt.Sprintf(":%d", *port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if *selfSigned != "" {
		cert, err := selfSignedCert(*selfSigned)
		if err != nil {
			return err
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	log.Info("testserver serving", "addr", ln.Addr().String(), "host", host, "tls", *selfSigned != "")
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("testserver stopped")
	return nil
}

func get(url, caFile string, insecure bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client := http.DefaultClient
	if insecure {
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}} //nolint:gosec // a test client probing whether a server requires a client certificate
	} else if caFile != "" {
		pem, err := os.ReadFile(caFile) //nolint:gosec // a test tool reading what it is told.
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", caFile)
		}
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

func appendLine(file, line string) error {
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644) //nolint:gosec // a test tool writing where it is told.
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// selfSignedCert is an ephemeral ECDSA certificate for name, signed by
// itself: a server outside the mesh.
func selfSignedCert(name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
