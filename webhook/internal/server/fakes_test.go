package server

import (
	"context"
	"errors"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/contrast-cc/contrast/webhook/images"
)

// unresolvingSource resolves nothing.
type unresolvingSource struct{}

func (unresolvingSource) Resolve(_ context.Context, image string, _ authn.Keychain) (*images.Image, error) {
	return nil, &images.Error{Image: image, Err: images.ErrNotFound}
}

func (unresolvingSource) Accounts(_ context.Context, img *images.Image, _ authn.Keychain) (*images.Accounts, error) {
	return nil, &images.Error{Image: img.Reference(), Err: errors.New("no accounts")}
}
