package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge/bridgetest"
)

func TestResize(t *testing.T) {
	reg := activities.NewRegistry()
	activities.Register(reg, "image.resize", resize)

	// The task runs through the bridge's workflow; out is what TaskManager recorded.
	out, err := bridgetest.Run(t, reg, "", "image.resize", map[string]any{"url": "https://img.example/a.png", "width": 100})
	require.NoError(t, err)
	require.JSONEq(t, `{"url":"https://img.example/a.png?w=100"}`, string(out))

	// A failure's error is TaskManager's error_message.
	_, err = bridgetest.Run(t, reg, "", "image.resize", map[string]any{"url": "https://img.example/a.png", "width": 0})
	require.EqualError(t, err, "width must be positive")

	// The same YAML as the bridge's config: here, a step after the handler.
	config := `
types:
  image.pipeline:
    steps:
      - { name: resize, handler: image.resize }
      - { name: log, handler: example.echo, params: { message: "resized to {{ .steps.resize.url }}" } }
`
	activities.RegisterExamples(reg)
	out, err = bridgetest.Run(t, reg, config, "image.pipeline", map[string]any{"url": "https://img.example/b.png", "width": 50})
	require.NoError(t, err)
	require.JSONEq(t, `{"resize":{"url":"https://img.example/b.png?w=100"},
		"log":{"echo":"resized to https://img.example/b.png?w=100","length":42}}`, string(out))
}
