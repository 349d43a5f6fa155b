// Package localdep is a module that exists only as a replace target.
package localdep

// Greeting is called so that the module is linked in.
func Greeting() string { return "hello from localdep" }
