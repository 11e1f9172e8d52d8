package atls

import (
	"bytes"
	"testing"
)

// FuzzReadMsg fuzzes the aTLS message reader.
func FuzzReadMsg(f *testing.F) {
	var b bytes.Buffer
	_ = writeMsg(&b, msgEvidence, []byte("evidence"))
	f.Add(b.Bytes())
	f.Add([]byte{msgReject, 0, 0, 0, 3, 'f', 'o', 'o'})
	f.Add([]byte{msgOK, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, payload, err := readMsg(bytes.NewReader(data))
		if err != nil {
			return
		}
		if typ < msgEvidence || typ > msgReject || len(payload) > maxMessage {
			t.Fatalf("accepted invalid message type %d len %d", typ, len(payload))
		}
		_ = sanitize(payload)
	})
}
