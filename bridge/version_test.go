package bridge

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
)

// --version prints the module version, commit, Go and SDK versions and
// exits 0 without reading any config.
func TestVersion_flag(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"--version"}, nil, &out, &errOut, nil)
	require.Equal(t, 0, code, errOut.String())
	bi := Build()
	require.Equal(t, bi.String()+"\n", out.String())
	require.Contains(t, out.String(), "tmbridge "+bi.Version)
	require.Contains(t, out.String(), runtime.Version())
	require.Contains(t, out.String(), "Temporal Go SDK "+temporal.SDKVersion)
	require.NotEmpty(t, bi.Version)
	require.NotEmpty(t, bi.Commit)
}

// A version set at link time wins over the module's.
func TestVersion_ldflags_override(t *testing.T) {
	require.Equal(t, "v9.9.9", readBuild("v9.9.9").Version)
	require.Equal(t, Build().Commit, readBuild("v9.9.9").Commit)
}
