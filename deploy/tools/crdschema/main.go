// Command crdschema turns the OpenAPI v3 schemas of CustomResourceDefinitions
// into the JSON schema files kubeconform reads, one per served version, at
// OUTDIR/GROUP/KIND_VERSION.json (kubeconform's
// -schema-location 'OUTDIR/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json').
// Objects that list their properties and neither allow other ones nor
// preserve unknown fields get additionalProperties: false, as the API server
// prunes such fields: a misspelt field then fails validation.
//
//	crdschema OUTDIR CRD.yaml...
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

type crd struct {
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Versions []struct {
			Name   string `json:"name"`
			Schema struct {
				OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

func strict(node any) {
	switch n := node.(type) {
	case map[string]any:
		_, hasProps := n["properties"]
		_, hasAdditional := n["additionalProperties"]
		preserve, _ := n["x-kubernetes-preserve-unknown-fields"].(bool)
		if hasProps && !hasAdditional && !preserve {
			n["additionalProperties"] = false
		}
		for _, v := range n {
			strict(v)
		}
	case []any:
		for _, v := range n {
			strict(v)
		}
	}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: crdschema OUTDIR CRD.yaml...")
		os.Exit(2)
	}
	out := os.Args[1]
	for _, file := range os.Args[2:] {
		raw, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var c crd
		if err := yaml.Unmarshal(raw, &c); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
			os.Exit(1)
		}
		for _, v := range c.Spec.Versions {
			s := v.Schema.OpenAPIV3Schema
			if s == nil {
				continue
			}
			strict(s)
			js, _ := json.MarshalIndent(s, "", "  ")
			dst := filepath.Join(out, c.Spec.Group, strings.ToLower(c.Spec.Names.Kind)+"_"+v.Name+".json")
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			if err := os.WriteFile(dst, js, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Println(dst)
		}
	}
}
