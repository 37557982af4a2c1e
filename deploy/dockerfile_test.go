package deploy_test

import (
	"bufio"
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// stage is one FROM ... AS name of the Dockerfile, with its instructions
// (continuation lines joined).
type stage struct {
	image, name string
	lines       []string
}

func (s stage) user() string {
	user := ""
	for _, l := range s.lines {
		if u, ok := strings.CutPrefix(l, "USER "); ok {
			user = strings.TrimSpace(u)
		}
	}
	return user
}

func dockerfileStages(t *testing.T) []stage {
	t.Helper()
	var stages []stage
	var cont string
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, "Dockerfile")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cont += l + " "
			continue
		}
		line, cont = cont+line, ""
		if f := strings.Fields(line); f[0] == "FROM" {
			s := stage{image: f[len(f)-1]}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				s.image, s.name = f[1], f[3]
			}
			stages = append(stages, s)
			continue
		}
		require.NotEmpty(t, stages, "instruction before FROM: %s", line)
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	require.NoError(t, sc.Err())
	return stages
}

// The Dockerfile builds tmbridge only (Temporal comes from Temporal's
// images), as a static binary, on pinned bases, running as non-root.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := dockerfileStages(t)
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
		require.NotContains(t, strings.Join(s.lines, "\n"), "temporalio/cli", "Temporal is not built here")
	}
	require.Equal(t, "tmbridge", stages[len(stages)-1].name, "the default target is the last stage")

	build := strings.Join(byName["build"].lines, "\n")
	require.Regexp(t, `CGO_ENABLED=0 go build -trimpath .*\./cmd/\.\.\.`, build)
	require.Contains(t, build, "-X github.com/prismq/tmbridge/bridge.version=$VERSION", "--build-arg VERSION sets the version")

	// golang: an exact version, at least the go directive of go.mod.
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(readFile(t, "go.mod"))
	require.NotNil(t, goVersion)
	require.Regexp(t, `^golang:`+regexp.QuoteMeta(string(goVersion[1]))+`-`, byName["build"].image)
	require.Regexp(t, `^debian:\d+\.\d+-slim$`, byName["tmbridge"].image)
	// distroless publishes no version tags (the Dockerfile says to pin it
	// by digest); its nonroot tag at least fixes the user.
	require.Equal(t, "gcr.io/distroless/static-debian12:nonroot", byName["tmbridge-distroless"].image)

	for _, name := range []string{"tmbridge", "tmbridge-distroless"} {
		s := byName[name]
		require.Regexp(t, `^[1-9]\d*:[1-9]\d*$`, s.user(), "%s runs as a numeric non-root user", name)
		require.Contains(t, s.lines, `ENTRYPOINT ["tmbridge"]`, name)
	}
	slim := strings.Join(byName["tmbridge"].lines, "\n")
	require.Contains(t, slim, "python3", "examples/tmbridge.yaml runs a Python exec handler")
	require.Contains(t, slim, "COPY examples/ examples/")
}
