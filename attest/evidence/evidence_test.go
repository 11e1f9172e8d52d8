package evidence

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sample() *Frame {
	return &Frame{
		Kind:     KindTDX,
		Evidence: []byte("quote"),
		Artifacts: []Artifact{
			{URL: "https://example/tcb", Header: map[string]string{"Tcb-Info-Issuer-Chain": "pem"}, Body: []byte("{}")},
			{URL: "https://example/crl", Body: []byte{1, 2, 3}},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	raw, err := Marshal(sample())
	require.NoError(t, err)
	got, err := Unmarshal(raw)
	require.NoError(t, err)
	assert.Equal(t, sample(), got)
}

func TestRejects(t *testing.T) {
	good, err := Marshal(sample())
	require.NoError(t, err)
	tests := map[string]struct {
		data []byte
		want error
	}{
		"empty":          {nil, ErrMalformed},
		"truncated":      {good[:len(good)-1], ErrMalformed},
		"trailing":       {append(bytes.Clone(good), 0), ErrMalformed},
		"bad magic":      {append([]byte("XXXX"), good[4:]...), ErrMalformed},
		"bad version":    {append(append([]byte{}, good[:4]...), append([]byte{9}, good[5:]...)...), ErrMalformed},
		"oversized":      {make([]byte, MaxSize+1), ErrTooLarge},
		"huge length":    {[]byte{'C', 'T', 'E', 'V', 1, 1, 0, 0, 0xff, 0xff, 0xff, 0xff}, ErrTooLarge},
		"many artifacts": {[]byte{'C', 'T', 'E', 'V', 1, 1, 0xff, 0xff, 0, 0, 0, 1, 0}, ErrTooLarge},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Unmarshal(tc.data)
			require.Error(t, err)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestMarshalLimits(t *testing.T) {
	_, err := Marshal(&Frame{Kind: KindSNP, Evidence: make([]byte, MaxSize)})
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = Marshal(&Frame{Kind: 7, Evidence: []byte{1}})
	require.ErrorIs(t, err, ErrMalformed)
}

func FuzzUnmarshal(f *testing.F) {
	good, err := Marshal(sample())
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte("CTEV"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := Unmarshal(data)
		if err != nil {
			return
		}
		again, err := Marshal(fr)
		if err != nil {
			t.Fatalf("re-marshal of accepted frame failed: %v", err)
		}
		if _, err := Unmarshal(again); err != nil {
			t.Fatalf("re-parse failed: %v", err)
		}
	})
}
