// Command generator prints the byte offsets of struct fields, read from the
// DWARF of a Go binary, as JSON. It is the reference reader for the offsets
// database: Go's own debug/dwarf and debug/elf decode every DWARF version and
// section compression the Go linker emits, so what it reports is the ground
// truth that both the database and the agent's TypeScript reader are checked
// against.
//
// Usage:
//
//	generator -binary ./prog [-src module=dir ...] runtime.g.goid net/http.Request.Method ...
//
// A field is named by its struct's qualified DWARF name and the member name,
// joined by a dot: "net/http.Request.Method". Output (stdout):
//
//	{"goVersion":"go1.26.8","modules":{...},"offsets":{"net/http.Request.Method":0},
//	 "absent":["..."],"notDeclared":["..."],"structNotFound":["..."]}
//
// "absent" lists fields whose struct exists but has no such member (the field
// does not exist in that version); "structNotFound" lists fields whose struct
// the linker did not keep, which says nothing about the field.
//
// A struct missing from the DWARF may also not exist at all in the module
// version the binary was built from (grpc's transport.ServerStream appeared in
// v1.69.0). Given the module's source directory with -src (as the build used
// it, from the module cache), the generator parses the struct's package for
// the binary's GOOS/GOARCH: when the package does not declare the type (or
// does not exist), the field is listed in "notDeclared" — it does not exist in
// that version — instead of "structNotFound".
package main

import (
	"debug/buildinfo"
	"debug/dwarf"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type result struct {
	Binary         string            `json:"binary"`
	GoVersion      string            `json:"goVersion,omitempty"`
	Modules        map[string]string `json:"modules,omitempty"`
	Offsets        map[string]int64  `json:"offsets"`
	Absent         []string          `json:"absent"`
	NotDeclared    []string          `json:"notDeclared"`
	StructNotFound []string          `json:"structNotFound"`
}

// sources maps a module path to the directory holding its source (-src).
type sources map[string]string

func (s sources) String() string { return fmt.Sprint(map[string]string(s)) }

func (s sources) Set(v string) error {
	mod, dir, ok := strings.Cut(v, "=")
	if !ok || mod == "" || dir == "" {
		return fmt.Errorf("want module=dir, got %q", v)
	}
	s[mod] = dir
	return nil
}

func main() {
	binary := flag.String("binary", "", "Go binary (ELF) with DWARF")
	src := sources{}
	flag.Var(src, "src", "module=dir: the module's source, to tell a struct the linker dropped from one that is not declared (repeatable)")
	flag.Parse()
	if *binary == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: generator -binary FILE [-src module=dir ...] pkg.Struct.field ...")
		os.Exit(2)
	}
	res, err := run(*binary, flag.Args(), src)
	if err != nil {
		fmt.Fprintf(os.Stderr, "generator: %s: %v\n", *binary, err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "generator:", err)
		os.Exit(1)
	}
}

func splitField(f string) (structName, member string, err error) {
	i := strings.LastIndexByte(f, '.')
	j := -1
	if i > 0 {
		j = strings.LastIndexByte(f[:i], '.')
	}
	// The struct part is itself qualified ("pkg.Type"): three non-empty parts.
	if i <= 0 || i == len(f)-1 || j <= 0 || j == i-1 {
		return "", "", fmt.Errorf("field %q is not of the form pkg.Struct.field", f)
	}
	return f[:i], f[i+1:], nil
}

func run(path string, fields []string, src sources) (*result, error) {
	wanted := map[string]map[string]bool{} // struct -> member -> true
	for _, f := range fields {
		s, m, err := splitField(f)
		if err != nil {
			return nil, err
		}
		if wanted[s] == nil {
			wanted[s] = map[string]bool{}
		}
		wanted[s][m] = true
	}

	res := &result{Binary: path, Offsets: map[string]int64{}, Absent: []string{}, NotDeclared: []string{}, StructNotFound: []string{}}
	ctxt := build.Default
	ctxt.GOOS, ctxt.GOARCH, ctxt.CgoEnabled = "linux", "amd64", false
	if bi, err := buildinfo.ReadFile(path); err == nil {
		res.GoVersion = bi.GoVersion
		res.Modules = map[string]string{}
		for _, d := range bi.Deps {
			if d.Replace != nil {
				d = d.Replace
			}
			res.Modules[d.Path] = d.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "GOOS":
				ctxt.GOOS = s.Value
			case "GOARCH":
				ctxt.GOARCH = s.Value
			case "CGO_ENABLED":
				ctxt.CgoEnabled = s.Value == "1"
			}
		}
	}

	ef, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer ef.Close()
	data, err := ef.DWARF()
	if err != nil {
		return nil, fmt.Errorf("reading DWARF: %w", err)
	}

	found := map[string]map[string]int64{} // struct -> member -> offset
	r := data.Reader()
	for len(found) < len(wanted) {
		e, err := r.Next()
		if err != nil {
			return nil, err
		}
		if e == nil {
			break
		}
		if e.Tag == dwarf.TagCompileUnit {
			continue // descend: Go keeps its types among the CU's children
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		if e.Tag != dwarf.TagStructType || wanted[name] == nil || found[name] != nil {
			if e.Children {
				r.SkipChildren()
			}
			continue
		}
		members, err := readMembers(r, name)
		if err != nil {
			return nil, err
		}
		found[name] = members
	}

	for _, f := range fields {
		s, m, _ := splitField(f)
		members, ok := found[s]
		switch {
		case !ok:
			declared, err := declaredInSource(&ctxt, src, s)
			if err != nil {
				return nil, err
			}
			if declared {
				res.StructNotFound = append(res.StructNotFound, f)
			} else {
				res.NotDeclared = append(res.NotDeclared, f)
			}
		default:
			if off, ok := members[m]; ok {
				res.Offsets[f] = off
			} else {
				res.Absent = append(res.Absent, f)
			}
		}
	}
	sort.Strings(res.Absent)
	sort.Strings(res.NotDeclared)
	sort.Strings(res.StructNotFound)
	return res, nil
}

// declaredInSource says whether the package of the qualified type name
// ("google.golang.org/grpc/internal/transport.ServerStream") declares that
// type, in the files that build for ctxt. Without the source of the type's
// module it answers true: nothing is known, so the caller reports the struct
// as not found.
func declaredInSource(ctxt *build.Context, src sources, qualified string) (bool, error) {
	i := strings.LastIndexByte(qualified, '.')
	pkg, name := qualified[:i], qualified[i+1:]
	mod := ""
	for m := range src {
		if (pkg == m || strings.HasPrefix(pkg, m+"/")) && len(m) > len(mod) {
			mod = m
		}
	}
	if mod == "" {
		return true, nil
	}
	dir := filepath.Join(src[mod], filepath.FromSlash(strings.TrimPrefix(pkg, mod)))
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return false, nil // no such package in this version
	}
	bp, err := ctxt.ImportDir(dir, 0)
	var noGo *build.NoGoError
	switch {
	case errors.As(err, &noGo):
		return false, nil // a directory without Go files for this target: no such package
	case err != nil:
		return false, fmt.Errorf("reading package %s in %s: %w", pkg, dir, err)
	}
	fset := token.NewFileSet()
	for _, f := range append(append([]string{}, bp.GoFiles...), bp.CgoFiles...) {
		file, err := parser.ParseFile(fset, filepath.Join(dir, f), nil, parser.SkipObjectResolution)
		if err != nil {
			return false, fmt.Errorf("parsing %s: %w", f, err)
		}
		for _, d := range file.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.TYPE {
				continue
			}
			for _, spec := range g.Specs {
				if spec.(*ast.TypeSpec).Name.Name == name {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// readMembers reads the children of the struct entry just returned by r.
func readMembers(r *dwarf.Reader, structName string) (map[string]int64, error) {
	members := map[string]int64{}
	for {
		e, err := r.Next()
		if err != nil {
			return nil, err
		}
		if e == nil || e.Tag == 0 {
			return members, nil
		}
		if e.Children {
			r.SkipChildren()
		}
		if e.Tag != dwarf.TagMember {
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		switch loc := e.Val(dwarf.AttrDataMemberLoc).(type) {
		case int64:
			members[name] = loc
		case []byte:
			// Older producers encode the offset as an expression: DW_OP_plus_uconst ULEB128.
			off, ok := plusUconst(loc)
			if !ok {
				return nil, fmt.Errorf("%s.%s: unsupported DW_AT_data_member_location expression % x", structName, name, loc)
			}
			members[name] = off
		case nil:
			members[name] = 0 // DWARF: a member without a location is at the start (unions)
		default:
			return nil, fmt.Errorf("%s.%s: unexpected DW_AT_data_member_location %T", structName, name, loc)
		}
	}
}

func plusUconst(expr []byte) (int64, bool) {
	const opPlusUconst = 0x23
	if len(expr) < 2 || expr[0] != opPlusUconst {
		return 0, false
	}
	var v int64
	var shift uint
	for i, b := range expr[1:] {
		if shift > 56 {
			return 0, false
		}
		v |= int64(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			return v, i+2 == len(expr)
		}
	}
	return 0, false
}
