package attest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"testing"
)

// TestEveryCheckKnown parses attest.go and requires every declared constant of
// type Check to be in the authoritative list, so that the list cannot drift.
func TestEveryCheckKnown(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "attest.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := 0
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Check" {
				continue
			}
			for i, name := range vs.Names {
				declared++
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("constant %s is not a string literal", name.Name)
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				if !Check(v).Known() {
					t.Errorf("%s (%q) is declared but not in the known list", name.Name, v)
				}
			}
		}
	}
	if declared == 0 {
		t.Fatal("found no Check constants in attest.go")
	}
	if got := len(Checks()); got != declared {
		t.Errorf("Checks() has %d entries, attest.go declares %d Check constants", got, declared)
	}
	for _, c := range Checks() {
		if !c.Known() {
			t.Errorf("%q not Known", c)
		}
	}
	if slices.ContainsFunc(Checks(), func(c Check) bool { return c == "" }) {
		t.Error("empty check in list")
	}
	if Check("no-such-check").Known() {
		t.Error("an undeclared check is Known")
	}
	for _, c := range []Check{CheckPCESVN, CheckMitigation} {
		if !c.Known() {
			t.Errorf("%q not Known", c)
		}
	}
}
