package images

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Static is a Source backed by a fixed map from the image string of a pod to
// its resolution. It serves fixtures in tests and offline generation.
type Static struct {
	Images map[string]*Image
	UserDB map[string]*Accounts // by digest
}

// NewStaticFromJSON reads a JSON object mapping image strings to Images;
// keys starting with "_" are ignored.
func NewStaticFromJSON(b []byte) (*Static, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("decoding image fixtures: %w", err)
	}
	s := &Static{Images: map[string]*Image{}}
	for k, v := range raw {
		if len(k) > 0 && k[0] == '_' {
			continue
		}
		var img Image
		if err := json.Unmarshal(v, &img); err != nil {
			return nil, fmt.Errorf("decoding image fixture %q: %w", k, err)
		}
		s.Images[k] = &img
	}
	return s, nil
}

// Resolve implements Source.
func (s *Static) Resolve(_ context.Context, image string, _ authn.Keychain) (*Image, error) {
	img, ok := s.Images[image]
	if !ok {
		return nil, &Error{Image: image, Err: ErrNotFound}
	}
	cp := *img
	return &cp, nil
}

// Accounts implements Source.
func (s *Static) Accounts(_ context.Context, img *Image, _ authn.Keychain) (*Accounts, error) {
	a, ok := s.UserDB[img.Digest]
	if !ok {
		return nil, &Error{Image: img.Reference(), Err: fmt.Errorf("no accounts: %w", ErrNotFound)}
	}
	return a, nil
}
