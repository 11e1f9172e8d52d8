package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
)

// bufSize is the copy buffer: a TLS record carries at most 16 KiB, so 64 KiB
// reads from TCP fill four records per write.
const bufSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

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
	return respErr
}

// copyHalf copies src to dst. At EOF it half-closes dst; on an error it
// closes both so the other direction ends too.
func copyHalf(dst, src net.Conn, count func(n int)) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var err error
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
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
	}
	if err != nil {
		_ = src.Close()
		_ = dst.Close()
		return err
	}
	if cw, ok := dst.(closeWriter); ok {
		_ = cw.CloseWrite()
	} else {
		_ = dst.Close()
	}
	return nil
}
