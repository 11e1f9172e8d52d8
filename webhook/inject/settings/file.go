package settings

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// FileKey is the key of a ConfigMap's data that holds a settings file, so
// `kubectl get configmap contrast-settings -o yaml` can be passed as is.
const FileKey = "settings.yaml"

// maxFileBytes bounds a settings file.
const maxFileBytes = 1 << 20

// ApplyFile reads the settings file at path and sets every flag of fs that
// it names and that is not set yet (fs.Changed): the command line, and
// whatever the caller applied before (the webhook's environment), win.
//
// The file is YAML: a map from flag name (without "--") to a value; lists
// for repeatable flags. Only the flags of these settings (Names) are
// accepted, so a file written for the webhook means the same to `contrast
// generate`. A ConfigMap whose data has the key FileKey is read as that
// file.
func (s *Settings) ApplyFile(fs *pflag.FlagSet, path string) error {
	raw, err := os.ReadFile(path) //nolint:gosec // the settings file is chosen by the operator
	if err != nil {
		return fmt.Errorf("reading settings file: %w", err)
	}
	values, err := ParseFile(raw)
	if err != nil {
		return fmt.Errorf("settings file %s: %w", path, err)
	}
	if err := s.apply(fs, values); err != nil {
		return fmt.Errorf("settings file %s: %w", path, err)
	}
	return nil
}

// ParseFile decodes a settings file into flag name → values (one value for
// a scalar, each element for a list). Keys are not checked against flags.
//
// A stream of several YAML documents (such as `helm template` output of the
// chart) is searched for the one ConfigMap whose data has FileKey.
func ParseFile(raw []byte) (map[string][]string, error) {
	if len(raw) > maxFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxFileBytes)
	}
	docs, err := splitDocuments(raw)
	if err != nil {
		return nil, err
	}
	if len(docs) <= 1 {
		return parseDocument(raw)
	}
	var found [][]byte
	for _, d := range docs {
		var cm struct {
			Kind string         `json:"kind"`
			Data map[string]any `json:"data"`
		}
		if err := yaml.Unmarshal(d, &cm); err == nil && cm.Kind == "ConfigMap" && cm.Data[FileKey] != nil {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 1:
		return parseDocument(found[0])
	case 0:
		return nil, fmt.Errorf("none of its %d documents is a ConfigMap with data key %q", len(docs), FileKey)
	default:
		return nil, fmt.Errorf("%d of its documents are ConfigMaps with data key %q; pass one", len(found), FileKey)
	}
}

// splitDocuments returns the non-empty YAML documents of raw.
func splitDocuments(raw []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading YAML documents: %w", err)
		}
		var v any
		if err := yaml.Unmarshal(d, &v); err == nil && v == nil {
			continue // empty or comments only
		}
		out = append(out, d)
	}
}

func parseDocument(raw []byte) (map[string][]string, error) {
	var doc map[string]any
	if err := yaml.UnmarshalStrict(raw, &doc); err != nil {
		return nil, fmt.Errorf("want a YAML map of flag name to value: %w", err)
	}
	if doc["kind"] == "ConfigMap" {
		data, _ := doc["data"].(map[string]any)
		inner, ok := data[FileKey].(string)
		if !ok {
			return nil, fmt.Errorf("a ConfigMap without data key %q", FileKey)
		}
		return parseDocument([]byte(inner))
	}
	out := make(map[string][]string, len(doc))
	for k, v := range doc {
		if strings.HasPrefix(k, "-") {
			return nil, fmt.Errorf("key %q: write flag names without dashes", k)
		}
		vals, err := scalars(v)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		out[k] = vals
	}
	return out, nil
}

func scalars(v any) ([]string, error) {
	if list, ok := v.([]any); ok {
		out := make([]string, 0, len(list))
		for i, e := range list {
			s, err := scalar(e)
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := scalar(v)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case float64: // sigs.k8s.io/yaml decodes through JSON
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case nil:
		return "", errors.New("no value")
	default:
		return "", fmt.Errorf("want a string, number, boolean or a list of them, not %T", v)
	}
}

func (s *Settings) apply(fs *pflag.FlagSet, values map[string][]string) error {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []error
	for _, k := range keys {
		if !slices.Contains(s.names, k) {
			errs = append(errs, fmt.Errorf("unknown setting %q (known: %s)", k, strings.Join(s.names, ", ")))
			continue
		}
		f := fs.Lookup(k)
		if f == nil {
			errs = append(errs, fmt.Errorf("setting %q is not a flag of this command", k))
			continue
		}
		if f.Changed {
			continue
		}
		vals := values[k]
		var v string
		if _, isSlice := f.Value.(pflag.SliceValue); isSlice {
			var b bytes.Buffer
			w := csv.NewWriter(&b)
			if err := w.Write(vals); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", k, err))
				continue
			}
			w.Flush()
			v = strings.TrimSuffix(b.String(), "\n")
		} else {
			if len(vals) != 1 {
				errs = append(errs, fmt.Errorf("%s: takes one value, not a list", k))
				continue
			}
			v = vals[0]
		}
		if err := fs.Set(k, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}
