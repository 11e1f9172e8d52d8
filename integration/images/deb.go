package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DebianSpec describes an image assembled from Debian packages: real
// software no one in this project wrote (nginx, openssl, cryptsetup), taken
// as the distribution ships it.
//
// The image holds every file of the named Packages, plus the packages that
// provide the shared libraries their programs load: the builder reads the
// DT_NEEDED entries and the interpreter of every ELF file in the image and
// adds, from the Depends of the packages already in, those that ship the
// missing libraries, until every program resolves. Packages a dependency
// list names for other reasons (maintainer scripts, services: debconf,
// iproute2 for nginx) are left out, which keeps the images small; a library
// no dependency provides fails the build, naming the program and the
// library. Manual pages and documentation are dropped, except each
// package's copyright file.
//
// The packages come from the host's apt (`apt-get download`) in the
// versions of its package index, are checked against the index's SHA-256
// and kept in CacheDir. Equal .deb files give equal images: file metadata is
// normalised (owner root, time 0) and entries are sorted. The versions are
// recorded in the image label LabelDebianPackages.
type DebianSpec struct {
	// Packages are the packages whose files the image holds in full.
	Packages []string
	// CacheDir keeps the downloaded .deb files between builds (bin/debs of
	// the repository); empty means a temporary folder.
	CacheDir string
	// Entrypoint, Cmd, Env (extra KEY=value) and Labels of the image.
	Entrypoint, Cmd, Env []string
	Labels               map[string]string
	// Files are extra files (image path -> content, mode 0644), e.g. a
	// configuration.
	Files map[string][]byte
	// Progress, when set, receives one line per download.
	Progress func(format string, args ...any)
}

// LabelDebianPackages is the image label listing the image's Debian
// packages as "name=version" separated by spaces, sorted.
const LabelDebianPackages = "cc.contrast.debian.packages"

// DebianPackage is one package of a Debian image.
type DebianPackage struct {
	Name, Version, Architecture string
	// Filename is the package's path in the archive; SHA256 its digest
	// there (both from the host's package index).
	Filename, SHA256 string
	// Depends holds the alternatives of every dependency (Pre-Depends
	// included), version constraints and architecture qualifiers removed.
	Depends [][]string
}

// baseFiles every Debian image gets: the users a program may look up and a
// writable /tmp. nginx's workers switch to nobody; nothing else here runs
// as another user.
var baseFiles = map[string][]byte{
	"/etc/passwd":        []byte("root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
	"/etc/group":         []byte("root:x:0:\nnogroup:x:65534:\n"),
	"/etc/hosts":         []byte("127.0.0.1 localhost\n::1 localhost\n"),
	"/etc/nsswitch.conf": []byte("passwd: files\ngroup: files\nhosts: files dns\n"),
}

// BuildDebian assembles the image of spec. It returns the image and its
// packages, sorted by name.
func BuildDebian(ctx context.Context, spec DebianSpec) (v1.Image, []DebianPackage, error) {
	if len(spec.Packages) == 0 {
		return nil, nil, errors.New("debian image spec names no packages")
	}
	if len(spec.Entrypoint) == 0 {
		return nil, nil, errors.New("debian image spec has no entrypoint")
	}
	cache := spec.CacheDir
	if cache == "" {
		tmp, err := os.MkdirTemp("", "contrast-debs-")
		if err != nil {
			return nil, nil, err
		}
		defer os.RemoveAll(tmp)
		cache = tmp
	}
	if err := os.MkdirAll(cache, 0o750); err != nil {
		return nil, nil, fmt.Errorf("creating the .deb cache: %w", err)
	}
	r := &debResolver{cache: cache, progress: spec.Progress, index: map[string]*DebianPackage{}, files: map[string]*debFiles{}}

	if err := r.lookup(ctx, spec.Packages); err != nil {
		return nil, nil, err
	}
	var in []string
	for _, n := range spec.Packages {
		if r.index[n] == nil {
			return nil, nil, fmt.Errorf("debian package %q: not in the host's package index (a typo, or run apt-get update)", n)
		}
		if !slices.Contains(in, n) {
			in = append(in, n)
		}
	}
	in, err := r.closeLibraries(ctx, in)
	if err != nil {
		return nil, nil, err
	}

	layer := newLayerBuilder()
	pkgs := make([]DebianPackage, 0, len(in))
	sort.Strings(in)
	for _, n := range in {
		f, err := r.extract(ctx, n)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range f.entries {
			if err := layer.add(e, n); err != nil {
				return nil, nil, err
			}
		}
		pkgs = append(pkgs, *r.index[n])
	}
	extra := map[string][]byte{}
	for p, c := range baseFiles {
		extra[p] = c
	}
	for p, c := range spec.Files {
		extra[p] = c
	}
	for p, c := range extra {
		if !path.IsAbs(p) || path.Clean(p) != p {
			return nil, nil, fmt.Errorf("file path %q in the image must be absolute and clean", p)
		}
		layer.set(debEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: 0o644}, data: c})
	}
	layer.set(debEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "tmp", Mode: 0o1777}})
	raw, err := layer.tar()
	if err != nil {
		return nil, nil, err
	}

	labels := map[string]string{}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	versions := make([]string, len(pkgs))
	for i, p := range pkgs {
		versions[i] = p.Name + "=" + p.Version
	}
	labels[LabelDebianPackages] = strings.Join(versions, " ")
	img, err := newImage(raw, v1.History{CreatedBy: "contrast images.BuildDebian", Comment: strings.Join(versions, " ")}, v1.Config{
		Entrypoint: spec.Entrypoint,
		Cmd:        spec.Cmd,
		Env:        append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, spec.Env...),
		Labels:     labels,
		WorkingDir: "/",
	})
	if err != nil {
		return nil, nil, err
	}
	return img, pkgs, nil
}

// debResolver looks packages up in the host's index, downloads and
// extracts them, each once.
type debResolver struct {
	cache    string
	progress func(string, ...any)
	index    map[string]*DebianPackage
	// looked records names asked for, found or not (virtual packages).
	looked map[string]bool
	files  map[string]*debFiles
}

// lookup reads the index entries of names not looked up yet.
func (r *debResolver) lookup(ctx context.Context, names []string) error {
	if r.looked == nil {
		r.looked = map[string]bool{}
	}
	var ask []string
	for _, n := range names {
		if !r.looked[n] {
			r.looked[n] = true
			ask = append(ask, n)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	// A virtual or unknown name prints nothing for it; the others still
	// print, so the exit status is not the verdict: the missing entry is.
	cmd := exec.CommandContext(ctx, "apt-cache", append([]string{"show", "--no-all-versions"}, ask...)...) //nolint:gosec // package names of the image spec and their index entries
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && len(out) == 0 && !strings.Contains(stderr.String(), "No packages found") {
		return fmt.Errorf("apt-cache show %s: %w: %s", strings.Join(ask, " "), err, strings.TrimSpace(stderr.String()))
	}
	pkgs, err := parseDebianIndex(out)
	if err != nil {
		return err
	}
	for i := range pkgs {
		p := pkgs[i]
		if p.Architecture != "amd64" && p.Architecture != "all" {
			continue
		}
		if _, ok := r.index[p.Name]; !ok {
			r.index[p.Name] = &p
		}
	}
	return nil
}

// closeLibraries adds to in the dependencies that provide the shared
// libraries and interpreters its programs need, breadth first along the
// Depends of the packages already in.
func (r *debResolver) closeLibraries(ctx context.Context, in []string) ([]string, error) {
	for {
		provided := map[string]bool{}
		paths := map[string]bool{}
		type need struct{ lib, by string }
		var needs []need
		for _, n := range in {
			f, err := r.extract(ctx, n)
			if err != nil {
				return nil, err
			}
			for lib := range f.provides {
				provided[lib] = true
			}
			for p := range f.paths {
				paths[p] = true
			}
		}
		for _, n := range in {
			f := r.files[n]
			for _, e := range f.elfs {
				if e.interp != "" && !paths[strings.TrimPrefix(path.Clean(e.interp), "/")] {
					needs = append(needs, need{lib: e.interp, by: e.path})
				}
				for _, l := range e.needed {
					if !provided[l] && !slices.ContainsFunc(e.runpath, func(d string) bool { return paths[path.Join(d, l)] }) {
						needs = append(needs, need{lib: l, by: e.path})
					}
				}
			}
		}
		if len(needs) == 0 {
			return in, nil
		}
		// Candidates: the first installable alternative of every
		// dependency of the packages in the image.
		// (one apt-cache call for all the names not looked up yet)
		var names []string
		for _, n := range in {
			for _, alts := range r.index[n].Depends {
				names = append(names, alts...)
			}
		}
		if err := r.lookup(ctx, names); err != nil {
			return nil, err
		}
		var cands []string
		for _, n := range in {
			for _, alts := range r.index[n].Depends {
				for _, a := range alts {
					if r.index[a] != nil {
						if !slices.Contains(in, a) && !slices.Contains(cands, a) {
							cands = append(cands, a)
						}
						break
					}
				}
			}
		}
		sort.Strings(cands)
		added := false
		for _, c := range cands {
			f, err := r.extract(ctx, c)
			if err != nil {
				return nil, err
			}
			for _, nd := range needs {
				if f.provides[nd.lib] || f.paths[strings.TrimPrefix(path.Clean(nd.lib), "/")] {
					in = append(in, c)
					added = true
					break
				}
			}
		}
		if !added {
			var missing []string
			for _, nd := range needs {
				missing = append(missing, fmt.Sprintf("%s (needed by /%s)", nd.lib, nd.by))
			}
			slices.Sort(missing)
			missing = slices.Compact(missing)
			return nil, fmt.Errorf("debian image: no dependency of %s provides %s", strings.Join(in, ", "), strings.Join(missing, ", "))
		}
	}
}

// debFiles is what a package puts in the image.
type debFiles struct {
	entries []debEntry
	// paths of its entries (without leading slash); provides holds the
	// base names of its files and links in library folders.
	paths, provides map[string]bool
	elfs            []elfInfo
}

type debEntry struct {
	hdr  tar.Header
	data []byte
}

type elfInfo struct {
	path, interp string
	needed       []string
	// runpath holds the folders of its DT_RUNPATH or DT_RPATH, $ORIGIN
	// expanded (relative to the image root, without leading slash).
	runpath []string
}

// libraryDirs are the folders the dynamic loader of Debian amd64 searches
// without a cache.
var libraryDirs = []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib"}

// extract downloads (once) and reads the package's files.
func (r *debResolver) extract(ctx context.Context, name string) (*debFiles, error) {
	if f := r.files[name]; f != nil {
		return f, nil
	}
	p := r.index[name]
	if p == nil {
		return nil, fmt.Errorf("debian package %q: not in the host's package index", name)
	}
	deb, err := r.fetch(ctx, p)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb) //nolint:gosec // a verified .deb of the cache
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", filepath.Base(deb), err, strings.TrimSpace(stderr.String()))
	}
	f, err := readDebTar(name, out)
	if err != nil {
		return nil, err
	}
	r.files[name] = f
	return f, nil
}

// readDebTar reads a package's data tar into entries, dropping manual
// pages and documentation other than copyright files.
func readDebTar(name string, raw []byte) (*debFiles, error) {
	f := &debFiles{paths: map[string]bool{}, provides: map[string]bool{}}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("debian package %s: reading its files: %w", name, err)
		}
		p := strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+h.Name), "/"), "/")
		if p == "" || dropped(p) {
			continue
		}
		e := debEntry{hdr: tar.Header{Typeflag: h.Typeflag, Name: p, Linkname: h.Linkname, Mode: h.Mode & 0o7777}}
		switch h.Typeflag {
		case tar.TypeDir, tar.TypeSymlink:
		case tar.TypeReg:
			if e.data, err = io.ReadAll(tr); err != nil {
				return nil, fmt.Errorf("debian package %s: reading %s: %w", name, p, err)
			}
		case tar.TypeLink:
			// a hard link becomes a copy of its target, so entries can be
			// sorted freely
			target := strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
			i := slices.IndexFunc(f.entries, func(x debEntry) bool { return x.hdr.Name == target })
			if i < 0 {
				return nil, fmt.Errorf("debian package %s: hard link %s to %s before its target", name, p, target)
			}
			e.hdr.Typeflag, e.hdr.Linkname, e.data = tar.TypeReg, "", f.entries[i].data
		default:
			return nil, fmt.Errorf("debian package %s: %s has unsupported tar type %q", name, p, h.Typeflag)
		}
		f.entries = append(f.entries, e)
		f.paths[p] = true
		if e.hdr.Typeflag != tar.TypeDir && slices.Contains(libraryDirs, path.Dir(p)) {
			f.provides[path.Base(p)] = true
		}
		if e.hdr.Typeflag == tar.TypeReg && bytes.HasPrefix(e.data, []byte("\x7fELF")) {
			info, err := readELF(p, e.data)
			if err != nil {
				return nil, fmt.Errorf("debian package %s: %w", name, err)
			}
			f.elfs = append(f.elfs, info)
		}
	}
	return f, nil
}

func dropped(p string) bool {
	for _, prefix := range []string{"usr/share/man/", "usr/share/info/", "usr/share/lintian/", "usr/share/locale/", "usr/share/vim/", "usr/share/apport/"} {
		if strings.HasPrefix(p+"/", prefix) {
			return true
		}
	}
	if strings.HasPrefix(p, "usr/share/doc/") {
		// usr/share/doc/<package>/copyright stays, with its folders
		rest := strings.Split(strings.TrimPrefix(p, "usr/share/doc/"), "/")
		return len(rest) > 2 || (len(rest) == 2 && rest[1] != "copyright")
	}
	return false
}

func readELF(p string, data []byte) (elfInfo, error) {
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return elfInfo{}, fmt.Errorf("reading ELF %s: %w", p, err)
	}
	defer ef.Close()
	info := elfInfo{path: p}
	for _, prog := range ef.Progs {
		if prog.Type == elf.PT_INTERP {
			b, err := io.ReadAll(prog.Open())
			if err != nil {
				return elfInfo{}, fmt.Errorf("reading the interpreter of %s: %w", p, err)
			}
			info.interp = strings.TrimRight(string(b), "\x00")
		}
	}
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := ef.DynString(tag)
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", "$ORIGIN"), "$ORIGIN", "/"+path.Dir(p))
				info.runpath = append(info.runpath, strings.TrimPrefix(path.Clean(d), "/"))
			}
		}
	}
	// A static file or one without dynamic section has no DT_NEEDED.
	if info.needed, err = ef.ImportedLibraries(); err != nil && ef.Section(".dynamic") != nil {
		return elfInfo{}, fmt.Errorf("reading the libraries of %s: %w", p, err)
	}
	return info, nil
}

// fetch returns the cached .deb of p, downloading it when missing; the
// file's SHA-256 must be the index's.
func (r *debResolver) fetch(ctx context.Context, p *DebianPackage) (string, error) {
	file := filepath.Join(r.cache, path.Base(p.Filename))
	if sum, err := fileSHA256(file); err == nil && sum == p.SHA256 {
		return file, nil
	}
	tmp, err := os.MkdirTemp(r.cache, ".download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if r.progress != nil {
		r.progress("downloading %s %s", p.Name, p.Version)
	}
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", p.Name+"="+p.Version) //nolint:gosec // a package of the host's index
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s=%s: %w: %s", p.Name, p.Version, err, strings.TrimSpace(string(out)))
	}
	// apt names the file after the version with the epoch's colon escaped
	// (libcrypt1_1%3a4.4.33-2_amd64.deb), not as the archive does: take the
	// one file it wrote, cache it under the archive's name
	matches, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(matches) != 1 {
		return "", fmt.Errorf("apt-get download %s=%s: no single .deb file (found %d)", p.Name, p.Version, len(matches))
	}
	got := matches[0]
	sum, err := fileSHA256(got)
	if err != nil {
		return "", err
	}
	if sum != p.SHA256 {
		return "", fmt.Errorf("debian package %s %s: downloaded file has SHA-256 %s, the package index says %s", p.Name, p.Version, sum, p.SHA256)
	}
	if err := os.Rename(got, file); err != nil {
		return "", fmt.Errorf("caching %s: %w", filepath.Base(file), err)
	}
	return file, nil
}

func fileSHA256(name string) (string, error) {
	f, err := os.Open(name) //nolint:gosec // a file of the .deb cache
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// parseDebianIndex parses `apt-cache show` output: RFC 822 stanzas.
func parseDebianIndex(raw []byte) ([]DebianPackage, error) {
	var out []DebianPackage
	var cur map[string]string
	var last string
	flush := func() error {
		if cur == nil {
			return nil
		}
		p := DebianPackage{Name: cur["Package"], Version: cur["Version"], Architecture: cur["Architecture"], Filename: cur["Filename"], SHA256: cur["SHA256"]}
		if p.Name == "" || p.Version == "" || p.Filename == "" || p.SHA256 == "" {
			return fmt.Errorf("package index entry %q lacks Package, Version, Filename or SHA256", p.Name)
		}
		for _, field := range []string{"Pre-Depends", "Depends"} {
			deps, err := parseDepends(cur[field])
			if err != nil {
				return fmt.Errorf("package %s: %s: %w", p.Name, field, err)
			}
			p.Depends = append(p.Depends, deps...)
		}
		out = append(out, p)
		cur = nil
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if err := flush(); err != nil {
				return nil, err
			}
		case line[0] == ' ' || line[0] == '\t':
			if cur != nil && last != "" {
				cur[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				return nil, fmt.Errorf("package index: line %q is not a field", line)
			}
			if cur == nil {
				cur = map[string]string{}
			}
			last = k
			cur[k] = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// parseDepends parses a Depends field: "a (>= 1), b | c:any".
func parseDepends(field string) ([][]string, error) {
	if strings.TrimSpace(field) == "" {
		return nil, nil
	}
	var out [][]string
	for _, group := range strings.Split(field, ",") {
		var alts []string
		for _, alt := range strings.Split(group, "|") {
			alt = strings.TrimSpace(alt)
			if i := strings.IndexAny(alt, " ([<"); i >= 0 {
				alt = alt[:i]
			}
			alt, _, _ = strings.Cut(alt, ":")
			if alt == "" {
				return nil, fmt.Errorf("empty alternative in %q", group)
			}
			alts = append(alts, alt)
		}
		out = append(out, alts)
	}
	return out, nil
}

// layerBuilder merges the files of several packages into one layer.
type layerBuilder struct {
	entries map[string]debEntry
	owner   map[string]string
}

func newLayerBuilder() *layerBuilder {
	return &layerBuilder{entries: map[string]debEntry{}, owner: map[string]string{}}
}

// add puts e of package pkg in; two packages may share folders and equal
// links or files, never different contents under one path.
func (l *layerBuilder) add(e debEntry, pkg string) error {
	if prev, ok := l.entries[e.hdr.Name]; ok {
		if prev.hdr.Typeflag == tar.TypeDir && e.hdr.Typeflag == tar.TypeDir {
			return nil
		}
		if prev.hdr.Typeflag == e.hdr.Typeflag && prev.hdr.Linkname == e.hdr.Linkname && bytes.Equal(prev.data, e.data) {
			return nil
		}
		return fmt.Errorf("debian image: /%s is in both %s and %s, with different contents", e.hdr.Name, l.owner[e.hdr.Name], pkg)
	}
	l.entries[e.hdr.Name] = e
	l.owner[e.hdr.Name] = pkg
	return nil
}

// set puts e in, replacing what a package had there.
func (l *layerBuilder) set(e debEntry) {
	l.entries[e.hdr.Name] = e
	l.owner[e.hdr.Name] = "the image spec"
}

// tar writes the entries sorted, with their parent folders and fixed
// metadata.
func (l *layerBuilder) tar() ([]byte, error) {
	for p := range l.entries {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := l.entries[d]; !ok {
				l.entries[d] = debEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}}
			}
		}
	}
	names := make([]string, 0, len(l.entries))
	for p := range l.entries {
		names = append(names, p)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		e := l.entries[p]
		h := tar.Header{Typeflag: e.hdr.Typeflag, Name: p, Linkname: e.hdr.Linkname, Mode: e.hdr.Mode, ModTime: created.Time, Format: tar.FormatPAX}
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("writing layer: %w", err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("writing layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing layer: %w", err)
	}
	return buf.Bytes(), nil
}
