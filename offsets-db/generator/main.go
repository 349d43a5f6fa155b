// Command generator prints the byte offsets of struct fields, read from the
// DWARF of a Go binary, as JSON. It is the reference reader for the offsets
// database: Go's own debug/dwarf and debug/elf decode every DWARF version and
// section compression the Go linker emits, so what it reports is the ground
// truth that both the database and the agent's TypeScript reader are checked
// against.
//
// Usage:
//
//	generator -binary ./prog runtime.g.goid net/http.Request.Method ...
//
// A field is named by its struct's qualified DWARF name and the member name,
// joined by a dot: "net/http.Request.Method". Output (stdout):
//
//	{"goVersion":"go1.26.8","modules":{...},"offsets":{"net/http.Request.Method":0},
//	 "absent":["..."],"structNotFound":["..."]}
//
// "absent" lists fields whose struct exists but has no such member (the field
// does not exist in that version); "structNotFound" lists fields whose struct
// the linker did not keep, which says nothing about the field.
package main

import (
	"debug/buildinfo"
	"debug/dwarf"
	"debug/elf"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

type result struct {
	Binary         string            `json:"binary"`
	GoVersion      string            `json:"goVersion,omitempty"`
	Modules        map[string]string `json:"modules,omitempty"`
	Offsets        map[string]int64  `json:"offsets"`
	Absent         []string          `json:"absent"`
	StructNotFound []string          `json:"structNotFound"`
}

func main() {
	binary := flag.String("binary", "", "Go binary (ELF) with DWARF")
	flag.Parse()
	if *binary == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: generator -binary FILE pkg.Struct.field ...")
		os.Exit(2)
	}
	res, err := run(*binary, flag.Args())
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

func run(path string, fields []string) (*result, error) {
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

	res := &result{Binary: path, Offsets: map[string]int64{}, Absent: []string{}, StructNotFound: []string{}}
	if bi, err := buildinfo.ReadFile(path); err == nil {
		res.GoVersion = bi.GoVersion
		res.Modules = map[string]string{}
		for _, d := range bi.Deps {
			if d.Replace != nil {
				d = d.Replace
			}
			res.Modules[d.Path] = d.Version
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
			res.StructNotFound = append(res.StructNotFound, f)
		default:
			if off, ok := members[m]; ok {
				res.Offsets[f] = off
			} else {
				res.Absent = append(res.Absent, f)
			}
		}
	}
	sort.Strings(res.Absent)
	sort.Strings(res.StructNotFound)
	return res, nil
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
