package deploy_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/prismq/tmbridge/bridge"

	"github.com/prismq/tmbridge/internal/devtemporal"
)

// The services each profile runs.
var profiles = map[string][]string{
	"quick": {"temporal", "taskmanager", "tmbridge"},
	"prod": {"postgresql", "temporal-schema", "temporal-server", "temporal-setup", "temporal-ui",
		"prometheus", "grafana", "taskmanager", "tmbridge"},
}

// loadCompose loads docker-compose.yml as `docker compose --profile
// <profile>` does: interpolated (with no environment: defaults apply),
// normalized, checked for consistency, and with the optional dependencies
// on the other profile's services dropped.
func loadCompose(t *testing.T, profile string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{repoPath("docker-compose.yml")},
		cli.WithName("tmbridge"),
		cli.WithWorkingDirectory(repoPath()),
		cli.WithProfiles([]string{profile}),
		cli.WithResolvedPaths(true),
	)
	require.NoError(t, err)
	p, err := opts.LoadProject(context.Background())
	require.NoError(t, err, "profile %s", profile)
	// What Compose does with a `required: false` dependency on a service
	// the profile does not run: it drops it (newer compose-go releases
	// have this as Project.WithoutUnresolvedOptionalDependencies).
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			if _, ok := p.Services[dep]; !ok && !d.Required {
				delete(s.DependsOn, dep)
			}
		}
		p.Services[name] = s
	}
	return p
}

func eachProfile(t *testing.T, f func(t *testing.T, p *types.Project)) {
	for name := range profiles {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, loadCompose(t, name))
		})
	}
}

func TestCompose_profiles_run_their_services(t *testing.T) {
	t.Parallel()
	eachProfile(t, func(t *testing.T, p *types.Project) {
		require.ElementsMatch(t, profiles[p.Profiles[0]], p.ServiceNames())
	})
	// Without a profile nothing starts: the README says to pick one.
	require.Empty(t, loadCompose(t, "").ServiceNames())
}

// An exact version: 1.30.1, v3.5.0, 16.9; not latest, not a bare major.
var exactTag = regexp.MustCompile(`^v?\d+\.\d+(\.\d+)?$`)

func TestCompose_images_are_pinned(t *testing.T) {
	t.Parallel()
	eachProfile(t, func(t *testing.T, p *types.Project) {
		tags := map[string]string{}
		for name, s := range p.Services {
			if s.Build != nil {
				require.Empty(t, s.Image, "%s: built here, so no image to pull", name)
				require.Equal(t, "tmbridge", s.Build.Target, "%s: the Dockerfile's tmbridge target", name)
				continue
			}
			repo, tag, ok := strings.Cut(s.Image, ":")
			require.True(t, ok, "%s: image %q has no tag", name, s.Image)
			require.Regexp(t, exactTag, tag, "%s: image %q is not pinned to an exact version", name, s.Image)
			require.NotEqual(t, "temporalio/auto-setup", repo, "%s: auto-setup is deprecated", name)
			tags[repo] = tag
		}
		if tag, ok := tags["temporalio/temporal"]; ok {
			require.Equal(t, strings.TrimPrefix(devtemporal.Version, "v"), tag,
				"the quick profile's CLI image is the CLI the tests and make dev pin")
		}
		if tag, ok := tags["temporalio/server"]; ok {
			require.Equal(t, tag, tags["temporalio/admin-tools"], "admin-tools matches the server it sets up")
		}
	})
}

// The services that run for good and must say when they are up.
var servers = []string{"temporal", "postgresql", "temporal-server", "prometheus", "grafana", "taskmanager", "tmbridge"}

func TestCompose_health_checks_and_one_shot_jobs(t *testing.T) {
	t.Parallel()
	eachProfile(t, func(t *testing.T, p *types.Project) {
		for name, s := range p.Services {
			if slices.Contains(servers, name) {
				require.NotNil(t, s.HealthCheck, "%s has no health check", name)
				require.False(t, s.HealthCheck.Disable, name)
				require.Contains(t, []string{"CMD", "CMD-SHELL"}, s.HealthCheck.Test[0], name)
			}
			for dep, d := range s.DependsOn {
				target, ok := p.Services[dep]
				require.True(t, ok, "%s depends on %s, which profile %v does not run", name, dep, p.Profiles)
				switch d.Condition {
				case types.ServiceConditionHealthy:
					require.NotNil(t, target.HealthCheck, "%s waits for %s to be healthy: it needs a health check", name, dep)
				case types.ServiceConditionCompletedSuccessfully:
					// A job that restarts for good never completes.
					require.Regexp(t, `^(no|on-failure(:\d+)?)$`, target.Restart, "%s waits for %s to complete", name, dep)
				}
			}
		}
	})
}

// dependsOn asserts that service name waits for dep with this condition.
func dependsOn(t *testing.T, p *types.Project, name, dep, condition string) {
	t.Helper()
	d, ok := p.Services[name].DependsOn[dep]
	require.True(t, ok, "%s does not wait for %s", name, dep)
	require.Equal(t, condition, d.Condition, "%s waits for %s", name, dep)
}

func TestCompose_start_order(t *testing.T) {
	t.Parallel()
	const healthy, completed = types.ServiceConditionHealthy, types.ServiceConditionCompletedSuccessfully

	quick := loadCompose(t, "quick")
	dependsOn(t, quick, "tmbridge", "temporal", healthy)
	dependsOn(t, quick, "tmbridge", "taskmanager", healthy)
	require.Len(t, quick.Services["tmbridge"].DependsOn, 2, "the prod services are dropped")

	prod := loadCompose(t, "prod")
	dependsOn(t, prod, "temporal-schema", "postgresql", healthy)
	dependsOn(t, prod, "temporal-server", "temporal-schema", completed)
	dependsOn(t, prod, "temporal-setup", "temporal-server", healthy)
	dependsOn(t, prod, "temporal-ui", "temporal-server", healthy)
	dependsOn(t, prod, "grafana", "prometheus", healthy)
	// The search attributes exist before tmbridge starts.
	dependsOn(t, prod, "tmbridge", "temporal-setup", completed)
	dependsOn(t, prod, "tmbridge", "taskmanager", healthy)
	require.Len(t, prod.Services["tmbridge"].DependsOn, 2, "the quick dev server is dropped")

	// The jobs run the scripts of deploy/compose (e2e/deploy_test.go runs
	// temporal-setup.sh against the Temporal CLI's dev server).
	setup := prod.Services["temporal-setup"]
	require.Equal(t, types.ShellCommand{"/scripts/temporal-setup.sh"}, setup.Command)
	require.Equal(t, types.ShellCommand{"/scripts/postgres-schema.sh"}, prod.Services["temporal-schema"].Command)

	// The schema job sets up the database the server uses: the postgresql
	// service, as its user.
	db := prod.Services["postgresql"].Environment
	for _, name := range []string{"temporal-schema", "temporal-server"} {
		env := prod.Services[name].Environment
		for key, want := range map[string]*string{"POSTGRES_SEEDS": new("postgresql"), "POSTGRES_USER": db["POSTGRES_USER"], "POSTGRES_PWD": db["POSTGRES_PASSWORD"]} {
			require.NotNil(t, env[key], "%s: %s", name, key)
			require.Equal(t, *want, *env[key], "%s: %s", name, key)
		}
	}
}

// TEMPORAL_ADDRESS of tmbridge names one service of each profile: the one
// tmbridge waits for (directly or through the setup job).
func TestCompose_tmbridge_reaches_its_profiles_temporal(t *testing.T) {
	t.Parallel()
	want := map[string]string{"quick": "temporal", "prod": "temporal-server"}
	eachProfile(t, func(t *testing.T, p *types.Project) {
		addr := p.Services["tmbridge"].Environment["TEMPORAL_ADDRESS"]
		require.NotNil(t, addr)
		host, port, err := net.SplitHostPort(*addr)
		require.NoError(t, err)
		var named []string
		for name, s := range p.Services {
			if name == host {
				named = append(named, name)
			}
			for _, n := range s.Networks {
				if n != nil && slices.Contains(n.Aliases, host) {
					named = append(named, name)
				}
			}
		}
		require.Equal(t, []string{want[p.Profiles[0]]}, named, "services answering to %s", host)
		require.Equal(t, "7233", port)
	})
}

func TestCompose_ports_are_on_localhost_only(t *testing.T) {
	t.Parallel()
	eachProfile(t, func(t *testing.T, p *types.Project) {
		seen := map[string]string{}
		for name, s := range p.Services {
			for _, port := range s.Ports {
				require.Equal(t, "127.0.0.1", port.HostIP, "%s publishes %s beyond 127.0.0.1", name, port.Published)
				require.NotContains(t, seen, port.Published, "host port %s published twice", port.Published)
				seen[port.Published] = name
			}
		}
	})
}

func TestCompose_mounted_files_exist(t *testing.T) {
	t.Parallel()
	eachProfile(t, func(t *testing.T, p *types.Project) {
		for name, s := range p.Services {
			for _, v := range s.Volumes {
				if v.Type != types.VolumeTypeBind {
					continue
				}
				_, err := os.Stat(v.Source)
				require.NoError(t, err, "%s mounts %s", name, v.Source)
				require.True(t, v.ReadOnly, "%s mounts %s writable", name, v.Source)
			}
		}
	})
}

// flagValue returns the value of --name in a command.
func flagValue(cmd []string, name string) string {
	for i, a := range cmd {
		if a == name && i+1 < len(cmd) {
			return cmd[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func TestCompose_tmbridge_serves_metrics_and_stops_gracefully(t *testing.T) {
	t.Parallel()
	eachProfile(t, func(t *testing.T, p *types.Project) {
		s := p.Services["tmbridge"]
		_, port, err := net.SplitHostPort(flagValue(s.Command, "--metrics-addr"))
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(metricsPort), port)
		require.Len(t, s.Ports, 1)
		require.Equal(t, uint32(metricsPort), s.Ports[0].Target)

		require.NotNil(t, s.StopGracePeriod)
		grace := defaultConfig(t).ShutdownGrace
		require.Greater(t, time.Duration(*s.StopGracePeriod), bridge.StopTimeout(grace),
			"docker compose stop must not kill the bridge before its handlers had shutdown_grace")
	})
}

// Every Temporal the dev stack runs has devtemporal.RecommendedConfig:
// the quick profile's dev server, the prod profile's dynamic config file,
// and `make dev`'s server (scripts/dev.sh), as the tests' servers do.
func TestCompose_temporal_has_the_recommended_dynamic_config(t *testing.T) {
	t.Parallel()
	quick := loadCompose(t, "quick").Services["temporal"].Command
	file, err := os.ReadFile(repoPath("deploy/compose/dynamicconfig/development-sql.yaml"))
	require.NoError(t, err)
	var dc map[string][]struct {
		Value any `yaml:"value"`
	}
	require.NoError(t, yaml.Unmarshal(file, &dc))
	dev, err := os.ReadFile(repoPath("scripts/dev.sh"))
	require.NoError(t, err)
	for _, kv := range devtemporal.RecommendedConfig {
		i := slices.Index(quick, kv)
		require.True(t, i > 0 && quick[i-1] == "--dynamic-config-value", "quick profile: --dynamic-config-value %s in %q", kv, quick)
		key, value, _ := strings.Cut(kv, "=")
		require.Len(t, dc[key], 1, "prod profile: %s in development-sql.yaml", key)
		require.Equal(t, value, fmt.Sprint(dc[key][0].Value), "prod profile: %s", key)
		require.Contains(t, string(dev), "--dynamic-config-value "+kv, "scripts/dev.sh")
	}
}
