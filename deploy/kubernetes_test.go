package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/prismq/tmbridge/bridge"
)

// manifests are the objects of deploy/kubernetes/*.yaml.
type manifests struct {
	deployment appsv1.Deployment
	configMap  corev1.ConfigMap
	secret     corev1.Secret
}

// loadManifests reads every document of deploy/kubernetes/*.yaml as
// kubectl does (YAML 1.1, through JSON), strictly: a field the API does
// not have (a typo) fails.
func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(repoPath("deploy", "kubernetes", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var m manifests
	seen := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, f)
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var tm metav1.TypeMeta
			require.NoError(t, sigsyaml.Unmarshal(doc, &tm), f)
			var into any
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				into = &m.deployment
			case "v1 ConfigMap":
				into = &m.configMap
			case "v1 Secret":
				into = &m.secret
			default:
				t.Fatalf("%s: unexpected object %s %s", f, tm.APIVersion, tm.Kind)
			}
			require.NoError(t, sigsyaml.UnmarshalStrict(doc, into), "%s: %s", f, tm.Kind)
			seen[tm.Kind]++
		}
	}
	require.Equal(t, map[string]int{"Deployment": 1, "ConfigMap": 1, "Secret": 1}, seen)
	return m
}

func (m manifests) container(t *testing.T) corev1.Container {
	t.Helper()
	cs := m.deployment.Spec.Template.Spec.Containers
	require.Len(t, cs, 1)
	return cs[0]
}

func (m manifests) env(t *testing.T, name string) *corev1.EnvVar {
	t.Helper()
	for _, e := range m.container(t).Env {
		if e.Name == name {
			return &e
		}
	}
	return nil
}

// mountOf returns the volume mounted at the directory holding file, and
// the file's name in it.
func (m manifests) mountOf(t *testing.T, file string) (corev1.Volume, string) {
	t.Helper()
	for _, vm := range m.container(t).VolumeMounts {
		if path.Dir(file) == vm.MountPath {
			for _, v := range m.deployment.Spec.Template.Spec.Volumes {
				if v.Name == vm.Name {
					return v, path.Base(file)
				}
			}
		}
	}
	t.Fatalf("no volume is mounted at %s", path.Dir(file))
	return corev1.Volume{}, ""
}

// load runs bridge.Load on the ConfigMap's config with the container's
// args and env, the Secret's key file laid out as the kubelet does (a
// symlink into a ..data directory).
func (m manifests) load(t *testing.T) bridge.Config {
	t.Helper()
	c := m.container(t)
	dir := t.TempDir()

	cfgPath := flagValue(c.Args, "--config")
	vol, name := m.mountOf(t, cfgPath)
	require.NotNil(t, vol.ConfigMap, "the config comes from a ConfigMap")
	require.Equal(t, m.configMap.Name, vol.ConfigMap.Name)
	cfgFile := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(cfgFile, []byte(m.configMap.Data[name]), 0o600))

	keyPath := m.env(t, "TASKMANAGER_API_KEY_FILE").Value
	vol, name = m.mountOf(t, keyPath)
	require.NotNil(t, vol.Secret, "the API key comes from a Secret")
	secretDir := filepath.Join(dir, "secret")
	data := filepath.Join(secretDir, "..2026_01_01_00_00_00.1")
	require.NoError(t, os.MkdirAll(data, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(data, name), []byte("k8s-test-key\n"), 0o400))
	require.NoError(t, os.Symlink(filepath.Base(data), filepath.Join(secretDir, "..data")))
	require.NoError(t, os.Symlink(filepath.Join("..data", name), filepath.Join(secretDir, name)))

	var env []string
	for _, e := range c.Env {
		switch {
		case e.Name == "TASKMANAGER_API_KEY_FILE":
			env = append(env, e.Name+"="+filepath.Join(secretDir, name))
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		}
	}
	args := append([]string(nil), c.Args...)
	for i := range args {
		if args[i] == cfgPath {
			args[i] = cfgFile
		}
	}
	cfg, err := bridge.Load(args, env, io.Discard)
	require.NoError(t, err, "the ConfigMap's config, with the Deployment's args and env")
	require.Equal(t, bridge.Secret("k8s-test-key"), cfg.APIKey, "read from the mounted Secret")
	return cfg
}

func TestKubernetes_config_loads(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	cfg := m.load(t)
	require.Equal(t, m.env(t, "WORKER_ID").Value, cfg.WorkerID)
	_, port, err := net.SplitHostPort(cfg.MetricsAddr)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(metricsPort), port)
}

func TestKubernetes_probes_hit_the_health_endpoints(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	c := m.container(t)
	require.Len(t, c.Ports, 1)
	require.Equal(t, int32(metricsPort), c.Ports[0].ContainerPort)
	for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		require.NotNil(t, probe)
		require.NotNil(t, probe.HTTPGet)
		require.Equal(t, want, probe.HTTPGet.Path)
		require.Equal(t, c.Ports[0].Name, probe.HTTPGet.Port.String(), "%s on the metrics port", want)
	}
}

func TestKubernetes_runs_as_non_root(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	pod := m.deployment.Spec.Template.Spec
	require.NotNil(t, pod.SecurityContext)
	require.True(t, *pod.SecurityContext.RunAsNonRoot)
	require.NotZero(t, *pod.SecurityContext.RunAsUser)
	// The image's own user (the Dockerfile's tmbridge stage).
	for _, s := range dockerfileStages(t) {
		if s.name == "tmbridge" {
			require.Equal(t, strconv.FormatInt(*pod.SecurityContext.RunAsUser, 10), strings.Split(s.user(), ":")[0])
		}
	}
	require.False(t, *pod.AutomountServiceAccountToken, "the bridge does not talk to the Kubernetes API")

	sc := m.container(t).SecurityContext
	require.NotNil(t, sc)
	require.False(t, *sc.AllowPrivilegeEscalation)
	require.True(t, *sc.ReadOnlyRootFilesystem)
	require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)

	image := m.container(t).Image
	_, tag, ok := strings.Cut(path.Base(image), ":")
	require.True(t, ok, "image %s has no tag", image)
	require.Regexp(t, exactTag, tag)
}

func TestKubernetes_api_key_comes_from_the_secret(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	keyPath := m.env(t, "TASKMANAGER_API_KEY_FILE").Value
	vol, name := m.mountOf(t, keyPath)
	require.NotNil(t, vol.Secret)
	require.Equal(t, m.secret.Name, vol.Secret.SecretName)
	require.Equal(t, []corev1.KeyToPath{{Key: name, Path: name}}, vol.Secret.Items)
	require.Contains(t, m.secret.StringData, name, "the example Secret has the key the Deployment mounts")
	require.Equal(t, int32(0o440), *vol.Secret.DefaultMode, "readable by the pod's group (fsGroup) only")

	require.Nil(t, m.env(t, "TASKMANAGER_API_KEY"), "the key is a file, never an environment variable")
	for _, e := range m.container(t).Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			require.Equal(t, m.secret.Name, e.ValueFrom.SecretKeyRef.Name)
		}
	}

	// The ConfigMap's config sets no key, and holds no secret value.
	for file, text := range m.configMap.Data {
		var cfg map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(text), &cfg), file)
		require.NotContains(t, cfg, "api_key", file)
		require.NotContains(t, cfg, "api_key_file", "%s: the Deployment sets the file, next to its mount", file)
		for _, v := range m.secret.StringData {
			require.NotContains(t, text, v, file)
		}
	}
}

// One pod per worker id, stable across restarts, and a stop that lets
// running handlers finish before Kubernetes kills the pod.
func TestKubernetes_worker_id_and_termination(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	spec := m.deployment.Spec
	require.Equal(t, int32(1), *spec.Replicas)
	require.Equal(t, appsv1.RecreateDeploymentStrategyType, spec.Strategy.Type,
		"two pods never claim under one worker id")
	id := m.env(t, "WORKER_ID")
	require.NotNil(t, id)
	require.Nil(t, id.ValueFrom, "a fixed id: a Deployment's pod names change on every restart")
	require.NotEmpty(t, id.Value)

	cfg := m.load(t)
	grace := time.Duration(*spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	require.Greater(t, grace, bridge.StopTimeout(cfg.ShutdownGrace),
		"terminationGracePeriodSeconds must cover the bridge's stop with shutdown_grace %s", cfg.ShutdownGrace)
}
