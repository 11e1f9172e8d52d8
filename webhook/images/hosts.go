package images

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// hostHeaderRe finds `[host."..."]` tables in file order (TOML maps do not
// keep it, containerd tries hosts in the order they are written).
var hostHeaderRe = regexp.MustCompile(`(?m)^\s*\[host\."([^"]+)"\]\s*$`)

// ParseHostsTOML reads one containerd hosts.toml (certs.d/<registry>/hosts.toml)
// and returns the mirrors that can pull and resolve, in order. skipOrigin is
// true when `server` names a different host than the registry, which
// containerd then uses instead of the registry itself.
func ParseHostsTOML(registry string, doc []byte) (mirrors []Mirror, server string, err error) {
	var v struct {
		Server string `toml:"server"`
		Host   map[string]struct {
			Capabilities []string `toml:"capabilities"`
		} `toml:"host"`
	}
	if err := toml.Unmarshal(doc, &v); err != nil {
		return nil, "", fmt.Errorf("hosts.toml of %s: %w", registry, err)
	}
	for _, m := range hostHeaderRe.FindAllStringSubmatch(string(doc), -1) {
		h := v.Host[m[1]]
		if h.Capabilities != nil && (!slices.Contains(h.Capabilities, "pull") || !slices.Contains(h.Capabilities, "resolve")) {
			continue
		}
		mir, err := ParseMirror(m[1])
		if err != nil {
			return nil, "", fmt.Errorf("hosts.toml of %s: %w", registry, err)
		}
		mirrors = append(mirrors, mir)
	}
	return mirrors, v.Server, nil
}

// ParseMirror reads a mirror as containerd's hosts.toml names it: a URL
// (http:// for plain HTTP, https:// by default) whose path, if any, is the
// registry API's root.
func ParseMirror(raw string) (Mirror, error) {
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Mirror{}, fmt.Errorf("host %q: %w", raw, err)
	}
	if u.Path != "" && u.Path != "/" && u.Path != "/v2" && u.Path != "/v2/" {
		return Mirror{}, fmt.Errorf("host %q: paths are not supported", raw)
	}
	switch u.Scheme {
	case "http":
		return Mirror{Host: u.Host, Insecure: true}, nil
	case "https":
		return Mirror{Host: u.Host}, nil
	default:
		return Mirror{}, fmt.Errorf("host %q: scheme %q", raw, u.Scheme)
	}
}

// ConfigFromHostsDir reads a containerd certs.d-style directory
// (<dir>/<registry>/hosts.toml) into mirror settings. A `server` that differs
// from the registry is used as the last mirror and the origin is skipped, as
// containerd does.
func ConfigFromHostsDir(dir string) (map[string][]Mirror, []string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	mirrors := map[string][]Mirror{}
	var skip []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		reg := e.Name()
		doc, err := os.ReadFile(filepath.Join(dir, reg, "hosts.toml")) // #nosec G304 -- the operator-configured hosts directory
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		ms, server, err := ParseHostsTOML(reg, doc)
		if err != nil {
			return nil, nil, err
		}
		if server != "" {
			s, err := ParseMirror(server)
			if err != nil {
				return nil, nil, fmt.Errorf("hosts.toml of %s: server: %w", reg, err)
			}
			if s.Host != reg {
				ms = append(ms, s)
				skip = append(skip, reg)
			}
		}
		if reg == "_default" {
			continue
		}
		mirrors[reg] = ms
	}
	slices.Sort(skip)
	return mirrors, skip, nil
}
