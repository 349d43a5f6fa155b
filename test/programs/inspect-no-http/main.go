// Command inspect-no-http links no net/http at all.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("args:", len(os.Args))
}
