// Package images resolves container images for the policy generator: tags to
// digests, image configurations, and (only when a non-numeric USER must be
// resolved) the image's /etc/passwd and /etc/group.
package images

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Config is the part of an OCI image configuration that influences the
// process a container runs.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
	// Volumes are the image's VOLUME paths, sorted.
	Volumes []string `json:"volumes,omitempty"`
}

// Image is a resolved image.
type Image struct {
	// Repository is the image's repository as written in the pod, without tag
	// or digest (e.g. docker.l5d.io/buoyantio/emojivoto-web).
	Repository string `json:"repository"`
	// Digest is the digest of the manifest or index the pod pins
	// (sha256:...).
	Digest string `json:"digest"`
	// Config is the configuration of the platform image.
	Config Config `json:"config"`
}

// Reference returns repository@digest.
func (i *Image) Reference() string { return i.Repository + "@" + i.Digest }

// Accounts are the users and groups of an image's root filesystem.
type Accounts struct {
	Users  []User  `json:"users,omitempty"`
	Groups []Group `json:"groups,omitempty"`
}

// User is one /etc/passwd entry.
type User struct {
	Name string `json:"name"`
	UID  int64  `json:"uid"`
	GID  int64  `json:"gid"`
}

// Group is one /etc/group entry.
type Group struct {
	Name    string   `json:"name"`
	GID     int64    `json:"gid"`
	Members []string `json:"members,omitempty"`
}

// LookupUser returns the user with the given name.
func (a *Accounts) LookupUser(name string) (User, bool) {
	for _, u := range a.Users {
		if u.Name == name {
			return u, true
		}
	}
	return User{}, false
}

// LookupGroup returns the group with the given name.
func (a *Accounts) LookupGroup(name string) (Group, bool) {
	for _, g := range a.Groups {
		if g.Name == name {
			return g, true
		}
	}
	return Group{}, false
}

// GroupsOf returns the GIDs of the groups that list user as a member, sorted.
func (a *Accounts) GroupsOf(user string) []int64 {
	var gids []int64
	for _, g := range a.Groups {
		if slices.Contains(g.Members, user) {
			gids = append(gids, g.GID)
		}
	}
	slices.Sort(gids)
	return slices.Compact(gids)
}

// Source resolves images. Implementations must be safe for concurrent use.
type Source interface {
	// Resolve resolves image (as written in a pod) to its digest and
	// configuration. It must not download layers.
	Resolve(ctx context.Context, image string, keychain authn.Keychain) (*Image, error)
	// Accounts reads /etc/passwd and /etc/group from the image's layers.
	Accounts(ctx context.Context, img *Image, keychain authn.Keychain) (*Accounts, error)
}

// Error is the error of a failed image resolution; it names the image as
// written in the pod. The Registry's Err is one of the classes in errors.go
// with a fixed message: an Error never contains text of a registry's
// response, so it can be shown to the pod's author.
type Error struct {
	Image string
	Err   error
}

func (e *Error) Error() string { return fmt.Sprintf("image %q: %v", e.Image, e.Err) }

func (e *Error) Unwrap() error { return e.Err }
