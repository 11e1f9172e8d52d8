package manifest

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"github.com/contrast-cc/contrast/attest"
)

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decode decodes data into m as encoding/json does with
// DisallowUnknownFields, but reports every unknown field and every value of
// the wrong type, each with its JSON path (`ReferenceValues.snp[0].CPUs`),
// where encoding/json stops at the first and names no index.
//
// It first decodes into a generic tree and walks it along m's Go type: an
// object key that names no field (matched as encoding/json matches them:
// exactly, else case-insensitively) is unknown, and every leaf is decoded on
// its own into its field's type. Only a tree without problems is then
// decoded into m, by encoding/json with DisallowUnknownFields.
func decode(data []byte, m *Manifest) []FieldError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return []FieldError{{Msg: decodeMsg(err)}}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return []FieldError{{Msg: "trailing data after the manifest"}}
	}
	var errs []FieldError
	walk(reflect.TypeFor[Manifest](), tree, "", &errs)
	if len(errs) > 0 {
		return errs
	}
	strict := json.NewDecoder(bytes.NewReader(data))
	strict.DisallowUnknownFields()
	if err := strict.Decode(m); err != nil {
		// Not expected after a clean walk; reported as encoding/json has it.
		return []FieldError{{Path: decodePath(err), Msg: decodeMsg(err)}}
	}
	return nil
}

// walk checks the generic JSON value v against Go type t at path.
func walk(t reflect.Type, v any, path string, errs *[]FieldError) {
	if v == nil {
		return // null leaves any Go value unchanged
	}
	if custom(t) {
		leaf(t, v, path, errs)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		walk(t.Elem(), v, path, errs)
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			mismatch(t, v, path, errs)
			return
		}
		fields := jsonFields(t)
		for _, key := range sortedKeys(obj) {
			ft, ok := fieldType(fields, key)
			if !ok {
				*errs = append(*errs, FieldError{Path: attest.JoinPath(path, key), Msg: "unknown field"})
				continue
			}
			walk(ft, obj[key], attest.JoinPath(path, key), errs)
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok || t.Key().Kind() != reflect.String {
			mismatch(t, v, path, errs)
			return
		}
		for _, key := range sortedKeys(obj) {
			walk(t.Elem(), obj[key], fmt.Sprintf("%s[%s]", path, key), errs)
		}
	case reflect.Slice, reflect.Array:
		arr, ok := v.([]any)
		if !ok {
			mismatch(t, v, path, errs)
			return
		}
		if t.Kind() == reflect.Array && len(arr) > t.Len() {
			// encoding/json would drop the extra elements silently.
			*errs = append(*errs, FieldError{Path: path, Msg: fmt.Sprintf("has %d elements, at most %d allowed", len(arr), t.Len())})
		}
		for i, e := range arr {
			walk(t.Elem(), e, fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case reflect.Interface:
	default:
		leaf(t, v, path, errs)
	}
}

// custom reports whether values of t decode themselves.
func custom(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		return false // walk dereferences first
	}
	p := reflect.PointerTo(t)
	return p.Implements(unmarshalerType) || p.Implements(textUnmarshalerType)
}

// leaf decodes v on its own into a new value of type t.
func leaf(t reflect.Type, v any, path string, errs *[]FieldError) {
	b, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(b, reflect.New(t).Interface())
	}
	if err != nil {
		*errs = append(*errs, FieldError{Path: path, Msg: decodeMsg(err)})
	}
}

func mismatch(t reflect.Type, v any, path string, errs *[]FieldError) {
	*errs = append(*errs, FieldError{Path: path, Msg: fmt.Sprintf("cannot decode JSON %s into %s", jsonKind(v), t)})
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "bool"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func sortedKeys(obj map[string]any) []string {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// fieldType returns the type of the field among fields (a struct type's
// jsonFields) that JSON key key decodes into: the exported field whose JSON
// name (tag name, else Go name) equals key, else one that equals it
// case-insensitively; fields of embedded structs are promoted as
// encoding/json promotes them.
func fieldType(fields []jsonField, key string) (reflect.Type, bool) {
	var fold reflect.Type
	var found bool
	for _, f := range fields {
		if f.name == key {
			return f.typ, true
		}
		if !found && strings.EqualFold(f.name, key) {
			fold, found = f.typ, true
		}
	}
	return fold, found
}

type jsonField struct {
	name string
	typ  reflect.Type
}

func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				out = append(out, jsonFields(et)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name: name, typ: f.Type})
	}
	return out
}

func decodePath(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field
	}
	return ""
}

func decodeMsg(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("cannot decode JSON %s into %s", te.Value, te.Type)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}
