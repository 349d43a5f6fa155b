// Command analysis-replace depends on a module through a replace directive,
// so that reading replacements back from build info is tested against
// `go version -m`.
package main

import (
	"fmt"

	"example.com/localdep"
)

func main() {
	fmt.Println(localdep.Greeting())
}
