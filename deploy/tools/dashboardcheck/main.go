// Command dashboardcheck validates Grafana dashboard JSON files against the
// dashboard schema of the Grafana Foundation SDK (its schemaVersion): the
// file must decode strictly (no unknown or mistyped field, panels and
// queries decoded by their plugin's schema) and pass the schema's
// constraints, and its schemaVersion must be the SDK's.
//
//	dashboardcheck FILE.json...
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// noErrors turns the SDK's empty error lists (a nil cog.BuildErrors in a
// non-nil error) into nil.
func noErrors(err error) error {
	var list cog.BuildErrors
	if errors.As(err, &list) && len(list) == 0 {
		return nil
	}
	return err
}

func main() {
	plugins.RegisterDefaultPlugins()
	want := dashboard.NewDashboard().SchemaVersion
	failed := false
	for _, file := range os.Args[1:] {
		raw, err := os.ReadFile(file)
		if err == nil {
			var d dashboard.Dashboard
			err = noErrors(d.UnmarshalJSONStrict(raw))
			if err == nil {
				err = noErrors(d.Validate())
			}
			if err == nil && d.SchemaVersion != want {
				err = fmt.Errorf("schemaVersion %d, the schema validated against is %d", d.SchemaVersion, want)
			}
			if err == nil {
				fmt.Printf("%s: valid Grafana dashboard (schemaVersion %d, %d panels)\n", file, d.SchemaVersion, len(d.Panels))
				continue
			}
		}
		failed = true
		fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
	}
	if failed || len(os.Args) < 2 {
		os.Exit(1)
	}
}
