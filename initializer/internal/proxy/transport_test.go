package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/internal/proxy/proxytest"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// recordingConn records the writes it passes on, or holds them back while
// capturing.
type recordingConn struct {
	net.Conn
	mu        sync.Mutex
	writes    []int
	capturing bool
	captured  bytes.Buffer
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.capturing {
		return r.captured.Write(p)
	}
	r.writes = append(r.writes, len(p))
	return r.Conn.Write(p)
}

func (r *recordingConn) snapshot() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.writes)
}

func (r *recordingConn) reset() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.writes
	r.writes = nil
	return w
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := listen()
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	a, err := dial(ln.Addr().String())
	require.NoError(t, err)
	b, ok := <-accepted
	require.True(t, ok, "accept failed")
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// tlsPair returns a proxy-side TLS server over a transport and a client
// whose writes can be captured, with the ingress's mTLS configuration, after
// the handshake.
func tlsPair(t *testing.T) (*tls.Conn, *transport, *tls.Conn, *recordingConn) {
	t.Helper()
	pki := proxytest.NewPKI(t)
	server, err := LoadBundle(pki.TLSDir(t, "server", "127.0.0.1"))
	require.NoError(t, err)
	client, err := LoadBundle(pki.TLSDir(t, "client"))
	require.NoError(t, err)
	a, b := tcpPair(t)
	st := newTransport(a)
	sc := tls.Server(st, server.mtls)
	rc := &recordingConn{Conn: b}
	cc := tls.Client(rc, client.clientConfig("127.0.0.1"))
	errc := make(chan error, 1)
	go func() { errc <- sc.HandshakeContext(context.Background()) }()
	require.NoError(t, cc.HandshakeContext(context.Background()))
	require.NoError(t, <-errc)
	return sc, st, cc, rc
}

// records returns the TLS records the client makes of msgs, without sending
// them.
func records(t *testing.T, cc *tls.Conn, rc *recordingConn, msgs ...[]byte) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range msgs {
		rc.mu.Lock()
		rc.capturing = true
		rc.captured.Reset()
		rc.mu.Unlock()
		_, err := cc.Write(m)
		require.NoError(t, err)
		rc.mu.Lock()
		rc.capturing = false
		out = append(out, bytes.Clone(rc.captured.Bytes()))
		rc.mu.Unlock()
	}
	return out
}

// readTLSWithin runs readTLS and fails the test if it waits longer than d.
func readTLSWithin(t *testing.T, d time.Duration, c *tls.Conn, tr *transport, buf []byte) int {
	t.Helper()
	type res struct {
		n   int
		err error
	}
	done := make(chan res, 1)
	go func() {
		n, err := readTLS(c, tr, buf)
		done <- res{n, err}
	}()
	select {
	case r := <-done:
		require.NoError(t, r.err)
		return r.n
	case <-time.After(d):
		t.Fatal("readTLS is waiting for more than the records it has")
		return 0
	}
}

// TestReadTLSHandsOnWithoutWaiting: with one record and the first part of
// the next received, readTLS returns the first at once (a request must not
// wait for the next one), and the next read completes the second record:
// crypto/tls keeps the partial record across errWouldBlock.
func TestReadTLSHandsOnWithoutWaiting(t *testing.T) {
	sc, st, cc, rc := tlsPair(t)
	first, second := bytes.Repeat([]byte{'a'}, 1000), bytes.Repeat([]byte{'b'}, 3000)
	recs := records(t, cc, rc, first, second)
	half := len(recs[1]) / 2
	raw := rc.Conn
	_, err := raw.Write(append(bytes.Clone(recs[0]), recs[1][:half]...))
	require.NoError(t, err)

	buf := make([]byte, largeBufSize)
	n := readTLSWithin(t, 5*time.Second, sc, st, buf)
	assert.Equal(t, first, buf[:n])

	_, err = raw.Write(recs[1][half:])
	require.NoError(t, err)
	n = readTLSWithin(t, 5*time.Second, sc, st, buf)
	assert.Equal(t, second, buf[:n])
}

// TestReadTLSCoalesces: once data streams, the records already received
// are handed on in one read.
func TestReadTLSCoalesces(t *testing.T) {
	sc, st, cc, rc := tlsPair(t)
	msgs := make([][]byte, 6)
	var all []byte
	for i := range msgs {
		msgs[i] = bytes.Repeat([]byte{byte('a' + i)}, 10<<10)
		all = append(all, msgs[i]...)
	}
	var wire []byte
	for _, r := range records(t, cc, rc, msgs...) {
		wire = append(wire, r...)
	}
	_, err := rc.Conn.Write(wire)
	require.NoError(t, err)

	// The first socket read fills the transport's small buffer; readTLS
	// hands on the complete records in it. The transport then moves to
	// its large buffer, and the second readTLS hands on all the rest at
	// once, more than one record can hold. (crypto/tls starts a connection
	// with small records, so the counts of records vary.)
	buf := make([]byte, largeBufSize)
	var got []byte
	var reads []int
	for len(got) < len(all) {
		n := readTLSWithin(t, 5*time.Second, sc, st, buf)
		got = append(got, buf[:n]...)
		reads = append(reads, n)
	}
	assert.Equal(t, all, got)
	require.Len(t, reads, 2)
	assert.Greater(t, reads[1], maxPlaintext)
}

// TestTransportCork: the records of one corked write leave in one system
// call; uncorked writes (handshake, alerts) pass straight through.
func TestTransportCork(t *testing.T) {
	a, b := tcpPair(t)
	rc := &recordingConn{Conn: a}
	tr := newTransport(rc)
	go func() { _, _ = io.Copy(io.Discard, b) }()

	_, err := tr.Write([]byte("direct"))
	require.NoError(t, err)
	assert.Equal(t, []int{6}, rc.reset())

	tr.cork()
	for range 8 {
		_, err := tr.Write(make([]byte, 16<<10+22))
		require.NoError(t, err)
	}
	assert.Empty(t, rc.reset(), "nothing is sent while corked")
	require.NoError(t, tr.uncork())
	assert.Equal(t, []int{8 * (16<<10 + 22)}, rc.reset())

	tr.cork()
	require.NoError(t, tr.uncork())
	assert.Empty(t, rc.reset(), "an empty cork sends nothing")
}

// TestCopyToTLSOneWritePerChunk: the proxy sends each chunk it reads as one
// system call of TLS records, and the bytes arrive intact.
func TestCopyToTLSOneWritePerChunk(t *testing.T) {
	pki := proxytest.NewPKI(t)
	server, err := LoadBundle(pki.TLSDir(t, "server", "127.0.0.1"))
	require.NoError(t, err)
	client, err := LoadBundle(pki.TLSDir(t, "client"))
	require.NoError(t, err)
	a, b := tcpPair(t)
	rc := &recordingConn{Conn: a}
	cc := tls.Client(newTransport(rc), client.clientConfig("127.0.0.1"))
	sc := tls.Server(b, server.mtls)
	received := make(chan []byte, 1)
	go func() {
		got, _ := io.ReadAll(sc)
		received <- got
	}()
	require.NoError(t, cc.HandshakeContext(context.Background()))
	rc.reset()

	src, srcPeer := tcpPair(t)
	payload := make([]byte, largeBufSize)
	_, _ = rand.Read(payload)
	done := make(chan error, 1)
	go func() { done <- copyHalf(cc, src, nil) }()
	// A first chunk that fills the small buffer moves the copy to the
	// large one. crypto/tls cuts the first bytes of a connection into
	// small records (dynamic record sizing): several records, one write.
	_, err = srcPeer.Write(payload[:smallBufSize])
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(rc.snapshot()) == 1 }, 5*time.Second, time.Millisecond)
	first := rc.reset()
	assert.Greater(t, first[0], smallBufSize+2*22, "several records")
	_, err = srcPeer.Write(payload)
	require.NoError(t, err)
	require.NoError(t, srcPeer.(*net.TCPConn).CloseWrite())
	require.NoError(t, <-done)
	// The large chunk is at least 32 records (16 KiB each at most); the
	// proxy sends them in one write, or in one per part if the socket
	// delivered the chunk in parts. Then the close_notify.
	writes := rc.reset()
	require.GreaterOrEqual(t, len(writes), 2)
	var sum int
	for _, w := range writes[:len(writes)-1] {
		sum += w
	}
	records := largeBufSize / maxPlaintext
	assert.GreaterOrEqual(t, sum, largeBufSize+records*22)
	assert.Less(t, len(writes)-1, records, "fewer system calls than records")
	assert.Equal(t, append(payload[:smallBufSize:smallBufSize], payload...), <-received)
}

// TestBufferBudget: no more than maxLargeBufs large buffers are in use; a
// stream beyond them goes on with its small buffer, and gets a large one
// once another is released.
func TestBufferBudget(t *testing.T) {
	old := maxLargeBufs.Load()
	maxLargeBufs.Store(largeInUse.Load() + 2)
	t.Cleanup(func() { maxLargeBufs.Store(old) })
	bufs := []*buffer{newBuffer(), newBuffer(), newBuffer()}
	for _, b := range bufs {
		b.adapt(smallBufSize)
	}
	assert.Len(t, bufs[0].bytes(), largeBufSize)
	assert.Len(t, bufs[1].bytes(), largeBufSize)
	assert.Len(t, bufs[2].bytes(), smallBufSize, "over the budget")
	bufs[0].adapt(10) // the stream paused
	assert.Len(t, bufs[0].bytes(), smallBufSize)
	bufs[2].adapt(smallBufSize)
	assert.Len(t, bufs[2].bytes(), largeBufSize, "a released buffer is available again")
	for _, b := range bufs {
		b.release()
	}
}

func TestBufferAdapt(t *testing.T) {
	b := newBuffer()
	defer b.release()
	steps := []struct {
		read      int
		wantLarge bool
	}{
		{read: 100, wantLarge: false},
		{read: smallBufSize, wantLarge: true}, // a full small read: data streams
		{read: largeBufSize, wantLarge: true},
		{read: smallBufSize, wantLarge: true}, // still streaming
		{read: smallBufSize - 1, wantLarge: false},
		{read: 0, wantLarge: false},
	}
	for i, s := range steps {
		b.adapt(s.read)
		assert.Equal(t, s.wantLarge, len(b.bytes()) == largeBufSize, "step %d (read %d)", i, s.read)
	}
}

// TestMeshBulk sends megabytes each way through an egress and an ingress
// proxy, streaming and then in small messages, and checks every byte and
// the byte counters.
func TestMeshBulk(t *testing.T) {
	pki := proxytest.NewPKI(t)
	backend := echoServer(t)
	server := start(t, Config{Mesh: &meshconfig.Config{}, TLSDir: pki.TLSDir(t, "server", "127.0.0.1"), OriginalDst: fixedDst(backend)})
	client := start(t, Config{
		Mesh: &meshconfig.Config{Egress: []meshconfig.Egress{
			{Name: "bulk", Listen: netip.MustParseAddrPort("127.0.0.1:0"), Remote: "127.0.0.1:" + strconv.Itoa(server.IngressAddr().(*net.TCPAddr).Port)},
		}},
		TLSDir: pki.TLSDir(t, "client"),
	})
	c, err := dial(client.EgressAddr("bulk").String())
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))

	const size = 16 << 20
	payload := make([]byte, size)
	_, _ = rand.Read(payload)
	echoed := make(chan [sha256.Size]byte, 1)
	go func() {
		h := sha256.New()
		_, _ = io.CopyN(h, c, size)
		echoed <- [sha256.Size]byte(h.Sum(nil))
	}()
	// Writes of odd sizes, so records and buffers do not line up.
	for rest := payload; len(rest) > 0; {
		n := min(len(rest), 100_003)
		_, err := c.Write(rest[:n])
		require.NoError(t, err)
		rest = rest[n:]
	}
	assert.Equal(t, sha256.Sum256(payload), <-echoed)

	// After the stream, lone small messages are handed on at once.
	for i := range 20 {
		msg := "message " + strconv.Itoa(i)
		got, err := roundTrip(c, msg)
		require.NoError(t, err)
		require.Equal(t, msg, got)
	}
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	rest, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Empty(t, rest)

	want := float64(size + 20*len("message 0") + 10*1)
	cm := client.cfg.Metrics
	assert.Eventually(t, func() bool {
		return testutil.ToFloat64(cm.bytes.WithLabelValues(DirectionEgress, FlowResponse)) == want
	}, 5*time.Second, 10*time.Millisecond)
	assert.InDelta(t, want, testutil.ToFloat64(cm.bytes.WithLabelValues(DirectionEgress, FlowRequest)), 0)
	assert.InDelta(t, want, testutil.ToFloat64(server.cfg.Metrics.bytes.WithLabelValues(DirectionIngress, FlowRequest)), 0)
}

// scriptedConn returns its reads in order.
type scriptedConn struct {
	net.Conn
	reads []scriptedRead
}

type scriptedRead struct {
	data string
	err  error
}

func (s *scriptedConn) Read(p []byte) (int, error) {
	if len(s.reads) == 0 {
		return 0, io.EOF
	}
	r := s.reads[0]
	s.reads = s.reads[1:]
	return copy(p, r.data), r.err
}

// TestTransportReadErrors: an error that comes with data is returned after
// the data, once, and a timeout does not end the connection.
func TestTransportReadErrors(t *testing.T) {
	timeout := os.ErrDeadlineExceeded
	tr := newTransport(&scriptedConn{reads: []scriptedRead{
		{data: "abc", err: timeout},
		{data: "", err: timeout},
		{data: "def"},
	}})
	type step struct {
		data string
		err  error
	}
	var got []step
	buf := make([]byte, 2)
	for range 7 {
		n, err := tr.Read(buf)
		got = append(got, step{string(buf[:n]), err})
	}
	assert.Equal(t, []step{
		{"ab", nil}, {"c", nil}, {"", timeout}, // the data, then its error once
		{"", timeout},           // the next socket read
		{"de", nil}, {"f", nil}, // reads go on after a timeout
		{"", io.EOF},
	}, got)

	tr = newTransport(&scriptedConn{reads: []scriptedRead{{data: "x"}}})
	tr.noWait = true
	n, err := tr.Read(buf)
	assert.Zero(t, n)
	require.ErrorIs(t, err, errWouldBlock, "no-wait mode does not touch the socket")
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	tr.noWait = false
	n, err = tr.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "x", string(buf[:n]))
}
