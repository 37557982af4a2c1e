// Command resize is tmbridge with a handler of its own: the README's
// "Writing a handler" example, built and tested by make test.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
)

// ResizeParams are an image.resize task's params.
type ResizeParams struct {
	URL   string `json:"url"`
	Width int    `json:"width"`
}

// ResizeResult is its result.
type ResizeResult struct {
	URL string `json:"url"`
}

func resize(ctx context.Context, p ResizeParams) (ResizeResult, error) {
	if p.Width <= 0 {
		return ResizeResult{}, activities.Permanent(errors.New("width must be positive")) // fails now, no Temporal retry
	}
	activities.ReportProgress(ctx, 50, "resizing")  // heartbeat detail + TaskManager progress
	return ResizeResult{URL: p.URL + "?w=100"}, nil // a plain error is retried
}

func main() {
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	activities.Register(reg, "image.resize", resize)
	os.Exit(bridge.Main(reg))
}
