// Command tmbridge runs PrismQ TaskManager tasks as durable Temporal
// workflows, with the built-in example handlers. Run `tmbridge --help`.
//
// To add your own handlers, write the same few lines with your
// activities.Register calls (see the bridge package's documentation).
package main

import (
	"os"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
)

func main() {
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	os.Exit(bridge.Main(reg))
}
