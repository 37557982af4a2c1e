package main

import (
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// The README's "Writing a handler" shows main.go and main_test.go as they
// are here, so its example compiles and its test passes.
func TestREADME_shows_this_example(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, file := range []string{"main.go", "main_test.go"} {
		block := regexp.MustCompile("(?s)<!-- examples/resize/" + regexp.QuoteMeta(file) + " -->\n```go\n(.*?)```\n").FindSubmatch(readme)
		require.NotNil(t, block, "README: no block marked <!-- examples/resize/%s -->", file)
		want, err := os.ReadFile(file)
		require.NoError(t, err)
		require.Equal(t, string(want), string(block[1]), "README's copy of examples/resize/%s differs from the file", file)
	}
}
