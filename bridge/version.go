package bridge

import (
	"cmp"
	"runtime"
	"runtime/debug"
	"sync"

	"go.temporal.io/sdk/temporal"
)

// BuildInfo says which build of tmbridge runs: `tmbridge --version`, the
// start-up banner and the tmbridge_build_info metric all show it.
type BuildInfo struct {
	// Version is tmbridge's module version: a release tag, a pseudo-version
	// Go derives from the repository (v0.0.0-20261129…-3faef4c0d1e2+dirty),
	// or what -ldflags "-X github.com/prismq/tmbridge/bridge.version=…" set.
	Version string
	// Commit is the VCS revision the binary was built from, with
	// "+dirty" when the tree had changes; "unknown" without VCS data.
	Commit string
	// GoVersion is the Go toolchain that built it.
	GoVersion string
	// SDKVersion is the Temporal Go SDK's version.
	SDKVersion string
}

// version, when set at link time, overrides the module version (images
// built without the repository's .git set it).
var version string

// modulePath is tmbridge's module, which a program embedding the bridge
// has as a dependency.
const modulePath = "github.com/prismq/tmbridge"

var build = sync.OnceValue(func() BuildInfo { return readBuild(version) })

// readBuild reads the binary's build info; override, when set, is the
// version.
func readBuild(override string) BuildInfo {
	bi := BuildInfo{Version: override, Commit: "unknown", GoVersion: runtime.Version(), SDKVersion: temporal.SDKVersion}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		bi.Version = cmp.Or(bi.Version, "unknown")
		return bi
	}
	mod := info.Main
	for _, d := range info.Deps {
		if d.Path == modulePath {
			mod = *d
		}
	}
	if mod.Replace != nil {
		mod = *mod.Replace
	}
	bi.Version = cmp.Or(bi.Version, mod.Version, "unknown")
	if info.Main.Path == modulePath {
		var rev, dirty string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if rev != "" {
			bi.Commit = rev + dirty
		}
	}
	return bi
}

// Build returns the running binary's BuildInfo.
func Build() BuildInfo { return build() }

// String is the one line `tmbridge --version` prints.
func (bi BuildInfo) String() string {
	return "tmbridge " + bi.Version + " (commit " + bi.Commit + ", " + bi.GoVersion + ", Temporal Go SDK " + bi.SDKVersion + ")"
}
