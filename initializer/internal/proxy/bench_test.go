package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/contrast-cc/contrast/initializer/internal/proxy/proxytest"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

const (
	benchBulkBytes   = 1 << 30 // per path and iteration
	benchBulkRounds  = 64      // the bulk bytes go in this many connections per path, interleaved
	benchMsgSize     = 1 << 10
	benchConcurrency = 8
	benchCycles      = 25  // request/response phases per path, interleaved
	benchPerCycle    = 100 // round trips per connection and phase
)

// benchPaths holds the three ways to reach the same application server on
// loopback: direct TCP, direct TLS 1.3 with the mesh certificates and the
// proxy's own mTLS configuration, and an egress proxy in front of an
// ingress proxy (the mesh).
type benchPaths struct {
	tcp, tls, mesh string
	clientTLS      *tls.Config
}

// benchServer serves the application protocol of the benchmark: the first
// byte selects bulk ('B': read to EOF, answer the byte count) or echo ('E':
// answer each benchMsgSize message with one of the same size).
func benchServe(c net.Conn) {
	defer c.Close()
	mode := make([]byte, 1)
	if _, err := io.ReadFull(c, mode); err != nil {
		return
	}
	switch mode[0] {
	case 'B':
		// A plain read loop: io.Copy to io.Discard would read in 8 KiB.
		buf := make([]byte, 64<<10)
		var n int64
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				break
			}
		}
		_ = binary.Write(c, binary.BigEndian, n)
	case 'E':
		buf := make([]byte, benchMsgSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}

func benchListen(b testing.TB, ln net.Listener) string {
	b.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go benchServe(c)
		}
	}()
	return ln.Addr().String()
}

func newBenchPaths(b *testing.B) *benchPaths {
	pki := proxytest.NewPKI(b)
	serverDir := pki.TLSDir(b, "server", "127.0.0.1")
	clientDir := pki.TLSDir(b, "client")
	serverBundle, err := LoadBundle(serverDir)
	if err != nil {
		b.Fatal(err)
	}
	clientBundle, err := LoadBundle(clientDir)
	if err != nil {
		b.Fatal(err)
	}
	p := &benchPaths{clientTLS: clientBundle.clientConfig("127.0.0.1")}

	ln, err := listen()
	if err != nil {
		b.Fatal(err)
	}
	p.tcp = benchListen(b, ln)
	port, err := strconv.Atoi(p.tcp[len("127.0.0.1:"):])
	if err != nil {
		b.Fatal(err)
	}
	// Direct TLS: the same server configuration the ingress uses.
	tln, err := listen()
	if err != nil {
		b.Fatal(err)
	}
	p.tls = benchListen(b, tls.NewListener(tln, serverBundle.mtls))

	ingress := start(b, Config{Mesh: &meshconfig.Config{}, TLSDir: serverDir, OriginalDst: fixedDst(uint16(port))})
	egress := start(b, Config{
		Mesh: &meshconfig.Config{Egress: []meshconfig.Egress{
			{Name: "bench", Listen: netip.MustParseAddrPort("127.0.0.1:0"), Remote: ingress.IngressAddr().String()},
		}},
		TLSDir: clientDir,
	})
	p.mesh = egress.EgressAddr("bench").String()
	return p
}

func (p *benchPaths) dial(b *testing.B, path string) net.Conn {
	addr := map[string]string{"tcp": p.tcp, "tls": p.tls, "mesh": p.mesh}[path]
	c, err := dial(addr)
	if err != nil {
		b.Fatal(err)
	}
	if path == "tls" {
		tc := tls.Client(c, p.clientTLS)
		if err := tc.HandshakeContext(context.Background()); err != nil {
			b.Fatal(err)
		}
		return tc
	}
	return c
}

// bulk sends size bytes over one connection and returns the time until the
// server confirmed it read them all.
func (p *benchPaths) bulk(b *testing.B, path string, size int) time.Duration {
	c := p.dial(b, path)
	defer c.Close()
	buf := make([]byte, 64<<10)
	buf[0] = 'B'
	start := time.Now()
	if _, err := c.Write(buf[:1]); err != nil {
		b.Fatal(err)
	}
	for sent := 0; sent < size; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		b.Fatal(err)
	}
	var n int64
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		b.Fatalf("%s: reading the byte count: %v", path, err)
	}
	d := time.Since(start)
	if n != int64(size) {
		b.Fatalf("%s: server read %d bytes, want %d", path, n, size)
	}
	return d
}

// BenchmarkThroughput sends 1 GiB per iteration over each of direct TCP,
// direct TLS 1.3 and the egress+ingress proxy pair, in 16 MiB connections
// that alternate between the paths so all see the same machine load, and
// reports each path's throughput and the mesh's ratio to direct TLS and TCP.
func BenchmarkThroughput(b *testing.B) {
	p := newBenchPaths(b)
	var total = map[string]time.Duration{}
	for b.Loop() {
		for range benchBulkRounds {
			for _, path := range []string{"tcp", "tls", "mesh"} {
				total[path] += p.bulk(b, path, benchBulkBytes/benchBulkRounds)
			}
		}
	}
	mbps := func(path string) float64 {
		return float64(b.N) * benchBulkBytes / (1 << 20) / total[path].Seconds()
	}
	b.ReportMetric(mbps("tcp"), "tcp-MiB/s")
	b.ReportMetric(mbps("tls"), "tls-MiB/s")
	b.ReportMetric(mbps("mesh"), "mesh-MiB/s")
	b.ReportMetric(mbps("mesh")/mbps("tls"), "mesh/tls-throughput")
	b.ReportMetric(mbps("mesh")/mbps("tcp"), "mesh/tcp-throughput")
}

// BenchmarkLatency runs 1 KiB request/response round trips on
// benchConcurrency persistent connections per path, alternating the paths
// in benchCycles phases so all see the same machine load, and reports p50
// and p99 of each path, the latency the mesh adds over direct TLS and TCP,
// and the mesh's p99 ratio to direct TLS.
func BenchmarkLatency(b *testing.B) {
	p := newBenchPaths(b)
	paths := []string{"tcp", "tls", "mesh"}
	conns := map[string][]net.Conn{}
	for _, path := range paths {
		for range benchConcurrency {
			c := p.dial(b, path)
			b.Cleanup(func() { _ = c.Close() })
			if _, err := c.Write([]byte{'E'}); err != nil {
				b.Fatal(err)
			}
			conns[path] = append(conns[path], c)
		}
	}
	lat := map[string][]time.Duration{}
	phase := func(path string) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, c := range conns[path] {
			wg.Go(func() {
				req := make([]byte, benchMsgSize)
				resp := make([]byte, benchMsgSize)
				local := make([]time.Duration, 0, benchPerCycle)
				for range benchPerCycle {
					start := time.Now()
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, resp); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(start))
				}
				mu.Lock()
				lat[path] = append(lat[path], local...)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	var elapsed = map[string]time.Duration{}
	for b.Loop() {
		for range benchCycles {
			for _, path := range paths {
				start := time.Now()
				phase(path)
				elapsed[path] += time.Since(start)
			}
		}
	}
	pct := map[string][2]time.Duration{}
	for _, path := range paths {
		s := slices.Clone(lat[path])
		slices.Sort(s)
		pct[path] = [2]time.Duration{s[len(s)/2], s[len(s)*99/100]}
		b.ReportMetric(float64(pct[path][0].Microseconds()), path+"-p50-µs")
		b.ReportMetric(float64(pct[path][1].Microseconds()), path+"-p99-µs")
		b.ReportMetric(float64(len(s))/elapsed[path].Seconds(), path+"-req/s")
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(pct["mesh"][0]-pct["tls"][0]), "added-vs-tls-p50-µs")
	b.ReportMetric(us(pct["mesh"][1]-pct["tls"][1]), "added-vs-tls-p99-µs")
	b.ReportMetric(us(pct["mesh"][0]-pct["tcp"][0]), "added-vs-tcp-p50-µs")
	b.ReportMetric(us(pct["mesh"][1]-pct["tcp"][1]), "added-vs-tcp-p99-µs")
	b.ReportMetric(float64(pct["mesh"][1])/float64(pct["tls"][1]), "mesh/tls-p99")
	b.ReportMetric(float64(pct["mesh"][0])/float64(pct["tls"][0]), "mesh/tls-p50")
}

const (
	benchConnCycles   = 5  // connect phases per path, interleaved
	benchConnPerCycle = 25 // connections per worker and phase
)

// BenchmarkConnect opens a new connection for each 1 KiB request/response
// (as HTTP/1.0 clients do), on benchConcurrency workers per path,
// alternating the paths in benchConnCycles phases, and reports p50 and p99
// of connect+handshake+round trip, connections per second, and the mesh's
// ratios to direct TLS. Direct TLS and the proxies use the same TLS
// configurations, so both resume sessions.
func BenchmarkConnect(b *testing.B) {
	p := newBenchPaths(b)
	paths := []string{"tcp", "tls", "mesh"}
	lat := map[string][]time.Duration{}
	elapsed := map[string]time.Duration{}
	phase := func(path string) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range benchConcurrency {
			wg.Go(func() {
				req := make([]byte, 1+benchMsgSize)
				req[0] = 'E'
				resp := make([]byte, benchMsgSize)
				local := make([]time.Duration, 0, benchConnPerCycle)
				for range benchConnPerCycle {
					start := time.Now()
					c := p.dial(b, path)
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, resp); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(start))
					_ = c.Close()
				}
				mu.Lock()
				lat[path] = append(lat[path], local...)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	for b.Loop() {
		for range benchConnCycles {
			for _, path := range paths {
				start := time.Now()
				phase(path)
				elapsed[path] += time.Since(start)
			}
		}
	}
	pct := map[string][2]time.Duration{}
	for _, path := range paths {
		s := slices.Clone(lat[path])
		slices.Sort(s)
		pct[path] = [2]time.Duration{s[len(s)/2], s[len(s)*99/100]}
		b.ReportMetric(float64(pct[path][0].Microseconds()), path+"-p50-µs")
		b.ReportMetric(float64(pct[path][1].Microseconds()), path+"-p99-µs")
		b.ReportMetric(float64(len(s))/elapsed[path].Seconds(), path+"-conn/s")
	}
	b.ReportMetric(float64(pct["mesh"][0])/float64(pct["tls"][0]), "mesh/tls-p50")
	b.ReportMetric(float64(pct["mesh"][1])/float64(pct["tls"][1]), "mesh/tls-p99")
	b.ReportMetric(float64(len(lat["mesh"]))/elapsed["mesh"].Seconds()/(float64(len(lat["tls"]))/elapsed["tls"].Seconds()), "mesh/tls-conn/s")
}
