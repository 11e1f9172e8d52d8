// Command testserver is the workload of the node tests. Images hold no shell,
// so it is also the client and the tool run through `kubectl exec`:
//
//	testserver serve [-port 8080] [-append FILE=LINE]  answer HTTP with the host name
//	testserver get [-cacert FILE] URL                  print the body of GET URL ($VARS expanded)
//	testserver append FILE LINE                         append a line to a file and exit
//	testserver cat FILE                                 print a file
//	testserver echo WORDS...                            print the words
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: testserver get [-cacert FILE] URL")
		}
		return get(os.ExpandEnv(fs.Arg(0)), *caFile)
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
	log.Info("testserver serving", "addr", ln.Addr().String(), "host", host)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("testserver stopped")
	return nil
}

func get(url, caFile string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client := http.DefaultClient
	if caFile != "" {
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
