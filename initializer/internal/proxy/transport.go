package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
)

// transport is the TCP connection under the proxy's side of a tls.Conn. It
// changes how the ciphertext moves through system calls, never what it is:
// crypto/tls still frames, encrypts, decrypts and authenticates every
// record, and handles every alert and post-handshake message.
//
//   - Reads take whatever the socket holds into a buffer (16 KiB, or 512 KiB
//     while data streams, see buffer) in one system call, and crypto/tls
//     takes its records from there. In no-wait mode (readTLS) a read that
//     would have to wait for the socket returns errWouldBlock instead.
//   - Between cork and uncork, writes are collected and sent in one system
//     call: the records crypto/tls makes of one large write leave together
//     instead of one system call per 16 KiB record.
//
// crypto/tls serializes its reads under its own lock, and only the copy
// loop reads, so the read side needs no lock. The write side has a mutex:
// crypto/tls may write an alert or a close_notify from another goroutine
// than the copy loop's (it serializes its own writes, but the flush in
// uncork happens outside of them).
type transport struct {
	net.Conn

	rb       *buffer
	data     []byte // unread bytes of the last socket read
	lastRead int    // size of the last socket read, for rb.adapt
	rerr     error  // error of the last socket read, returned once data is drained
	noWait   bool
	wmu      sync.Mutex
	corked   bool
	wbuf     *[]byte
}

func newTransport(c net.Conn) *transport {
	return &transport{Conn: c, rb: newBuffer()}
}

// wouldBlockError is the error of a no-wait read with nothing buffered.
// It is a net.Error that is Temporary, as the error of a read deadline is:
// crypto/tls then keeps its state, including a partly received record, and
// the next Read resumes where this one stopped.
type wouldBlockError struct{}

func (wouldBlockError) Error() string   { return "no buffered TLS record" }
func (wouldBlockError) Timeout() bool   { return true }
func (wouldBlockError) Temporary() bool { return true }

var errWouldBlock net.Error = wouldBlockError{}

func (t *transport) Read(p []byte) (int, error) {
	if len(t.data) == 0 {
		if err := t.rerr; err != nil {
			// Returned once, as the socket returned it: a timeout
			// is not the end of the connection.
			t.rerr = nil
			return 0, err
		}
		if t.noWait {
			return 0, errWouldBlock
		}
		t.rb.adapt(t.lastRead)
		buf := t.rb.bytes()
		n, err := t.Conn.Read(buf)
		t.lastRead = n
		if n == 0 {
			return 0, err
		}
		t.data, t.rerr = buf[:n], err
	}
	n := copy(p, t.data)
	t.data = t.data[n:]
	return n, nil
}

func (t *transport) Write(p []byte) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.corked {
		*t.wbuf = append(*t.wbuf, p...)
		return len(p), nil
	}
	return t.Conn.Write(p)
}

// cork starts collecting writes.
func (t *transport) cork() {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.corked = true
	t.wbuf = corkPool.Get().(*[]byte)
	*t.wbuf = (*t.wbuf)[:0]
}

// uncork sends what was collected since cork in one write.
func (t *transport) uncork() error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.corked = false
	b := t.wbuf
	t.wbuf = nil
	defer corkPool.Put(b)
	if len(*b) == 0 {
		return nil
	}
	_, err := t.Conn.Write(*b)
	return err
}

// release returns the read buffer to its pool once the connection is done.
func (t *transport) release() {
	t.data = nil
	t.rb.release()
}

// corkPool holds the buffers of corked writes. They grow to what one write
// needs: a largeBufSize write becomes 32 records with 22 bytes of header,
// content type and tag each.
var corkPool = sync.Pool{New: func() any { b := make([]byte, 0, smallBufSize+1024); return &b }}

// readTLS reads decrypted bytes from c into buf: it waits for the first
// record, then adds the records already received without waiting again,
// while buf can hold another full record. So a bulk transfer is forwarded
// in writes of up to len(buf), and a lone message at once.
func readTLS(c *tls.Conn, t *transport, buf []byte) (int, error) {
	n, err := c.Read(buf)
	if err != nil || t == nil {
		return n, err
	}
	t.noWait = true
	defer func() { t.noWait = false }()
	for len(buf)-n >= maxPlaintext {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			if errors.Is(err, errWouldBlock) {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}

// maxPlaintext is the largest plaintext of one TLS record.
const maxPlaintext = 16 << 10
