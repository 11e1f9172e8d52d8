package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Copy buffers. A connection starts with small buffers and moves to a large
// pooled one once a read fills the small one (data is streaming), and back
// once a read returns less than a small buffer (the stream paused). So a
// bulk transfer moves up to 512 KiB per system call (and per corked TLS
// write), while an idle or chatty connection holds 16 KiB per buffer.
// Large system calls pay off because loopback TCP costs mostly per call and
// per segment, not per byte. At most maxLargeBufs large buffers are in use
// at once (16 MiB, and as much again in corked writes); beyond that, streams
// go on with small buffers.
const (
	smallBufSize = 16 << 10
	largeBufSize = 512 << 10
)

var (
	largePool    = sync.Pool{New: func() any { b := make([]byte, largeBufSize); return &b }}
	largeInUse   atomic.Int32
	maxLargeBufs atomic.Int32 // 32; a variable for tests
)

func init() { maxLargeBufs.Store(32) }

// buffer is a copy buffer that grows while data streams.
type buffer struct {
	small []byte
	large *[]byte
}

func newBuffer() *buffer { return &buffer{small: make([]byte, smallBufSize)} }

// bytes returns the buffer to read into next.
func (b *buffer) bytes() []byte {
	if b.large != nil {
		return *b.large
	}
	return b.small
}

// adapt picks the size of the next read from the n bytes the last one
// returned.
func (b *buffer) adapt(n int) {
	switch {
	case b.large == nil && n == len(b.small):
		if largeInUse.Add(1) > maxLargeBufs.Load() {
			largeInUse.Add(-1)
			return
		}
		b.large = largePool.Get().(*[]byte)
	case b.large != nil && n < smallBufSize:
		b.release()
	}
}

// release returns the large buffer to the pool.
func (b *buffer) release() {
	if b.large != nil {
		largePool.Put(b.large)
		b.large = nil
		largeInUse.Add(-1)
	}
}

// closeWriter is implemented by *net.TCPConn (FIN) and *tls.Conn
// (close_notify).
type closeWriter interface{ CloseWrite() error }

// pipe copies between the initiator down and the target up until both
// directions end, then closes both. A direction that ends cleanly half-closes
// its destination, so protocols that half-close work end to end; an error in
// either direction closes both at once. It returns the error of the
// response direction (up to down), if any, for the caller to classify.
func pipe(down, up net.Conn, request, response func(n int)) error {
	var wg sync.WaitGroup
	var respErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		respErr = copyHalf(down, up, response)
	}()
	_ = copyHalf(up, down, request)
	wg.Wait()
	_ = down.Close()
	_ = up.Close()
	for _, c := range []net.Conn{down, up} {
		if t := transportOf(c); t != nil {
			t.release()
		}
	}
	return respErr
}

// transportOf returns the transport under a tls.Conn the proxy made, nil for
// any other connection.
func transportOf(c net.Conn) *transport {
	if tc, ok := c.(*tls.Conn); ok {
		t, _ := tc.NetConn().(*transport)
		return t
	}
	return nil
}

// abort closes the TCP connection under c without a TLS close_notify: after
// an error the peer must not take the end of the stream for a clean one,
// and a close_notify could wait on a peer that does not read.
func abort(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.NetConn().Close()
		return
	}
	_ = c.Close()
}

// copyHalf copies src to dst. At EOF it half-closes dst; on an error it
// closes both so the other direction ends too. From a proxy TLS connection
// it reads every record already received before it writes (readTLS); to
// one it sends the records of each write in one system call (cork).
func copyHalf(dst, src net.Conn, count func(n int)) error {
	b := newBuffer()
	defer b.release()
	srcTLS, _ := src.(*tls.Conn)
	srcT, dstT := transportOf(src), transportOf(dst)
	var err error
	for {
		buf := b.bytes()
		var n int
		var rerr error
		if srcTLS != nil {
			n, rerr = readTLS(srcTLS, srcT, buf)
		} else {
			n, rerr = src.Read(buf)
		}
		if n > 0 {
			if dstT != nil {
				dstT.cork()
			}
			w, werr := dst.Write(buf[:n])
			if dstT != nil {
				if uerr := dstT.uncork(); uerr != nil && werr == nil {
					w, werr = 0, uerr
				}
			}
			if count != nil && w > 0 {
				count(w)
			}
			if werr != nil {
				err = werr
				break
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				err = rerr
			}
			break
		}
		b.adapt(n)
	}
	if err != nil {
		abort(src)
		abort(dst)
		return err
	}
	if cw, ok := dst.(closeWriter); ok {
		_ = cw.CloseWrite()
	} else {
		_ = dst.Close()
	}
	return nil
}
