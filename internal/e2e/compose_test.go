package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// docker-compose.yml, read by Docker Compose's own loader (schema,
// interpolation, normalization, consistency), builds the Dockerfile's targets
// and runs what docs/DEPLOY.md says, with the defaults and with overrides.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"defaults", nil},
		{"overrides", map[string]string{"RABBITMQ_DEFAULT_USER": "u", "RABBITMQ_DEFAULT_PASS": "p",
			"GATEWAY_PORT": "18080", "RABBITMQ_PORT": "15673", "RABBITMQ_MANAGEMENT_PORT": "25673"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if problems := composeProblems(root, tc.env); len(problems) > 0 {
				t.Errorf("docker-compose.yml with %v:\n%s", tc.env, strings.Join(problems, "\n"))
			}
		})
	}
}

// A broken copy of docker-compose.yml, each row replacing the first old
// with new, has a problem that mentions want.
func TestComposeFileBroken(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	compose, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown key", "    hostname: rabbitmq\n", "    hostname: rabbitmq\n    hostnme: rabbitmq\n", "hostnme"},
		{"not YAML", "services:\n", "services: [\n", "yaml"},
		{"wrong type", "replicas: 2", "replicas: two", "replicas"},
		{"build target the Dockerfile lacks", "target: worker", "target: workers", `no stage "workers"`},
		{"build context elsewhere", "context: .", "context: ./cmd", "gateway: builds target"},
		{"dependency on an unknown service", "    depends_on:\n      rabbitmq:", "    depends_on:\n      broker:", "broker"},
		{"gateway before the broker is healthy", "condition: service_healthy", "condition: service_started", "gateway: depends on rabbitmq"},
		{"no broker healthcheck", `test: ["CMD", "rabbitmq-diagnostics", "-q", "ping"]`, "disable: true", "healthcheck"},
		{"port on every interface", `"127.0.0.1:${GATEWAY_PORT:-8080}:8080"`, `"${GATEWAY_PORT:-8080}:8080"`, "haproxy: publishes"},
		{"broker data not in its volume", "rabbitmq-data:/var/lib/rabbitmq", "/tmp/rabbitmq:/var/lib/rabbitmq", "/var/lib/rabbitmq"},
		{"wrong AMQP URL", "@rabbitmq:5672/", "@127.0.0.1:5672/", "ATASKS_AMQP_URL"},
		{"one worker", "replicas: 2 # docker-compose up --scale worker", "replicas: 1 # docker-compose up --scale worker", "worker: 1 replicas"},
		{"one gateway", "replicas: 2 # docker-compose up --scale gateway", "replicas: 1 # docker-compose up --scale gateway", "gateway: 1 replicas"},
		{"gateways without the history", `ATASKS_HISTORY: "true"`, `ATASKS_HISTORY: "false"`, "ATASKS_HISTORY"},
		{"no load balancer config", "./deploy/haproxy.cfg:", "./deploy/haproxy.conf:", "haproxy.conf"},
		{"a fifth service", "volumes:\n  rabbitmq-data:", "  extra:\n    image: busybox\n\nvolumes:\n  rabbitmq-data:", "services"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(string(compose), tc.old) {
				t.Fatalf("docker-compose.yml has no %q to break", tc.old)
			}
			dir := t.TempDir()
			broken := strings.Replace(string(compose), tc.old, tc.new, 1)
			if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(broken), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), dockerfile, 0o644); err != nil {
				t.Fatal(err)
			}
			problems := composeProblems(dir, nil)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("problems %q; want one mentioning %q", problems, tc.want)
			}
		})
	}
}

// composeProblems loads dir's docker-compose.yml as `docker compose config`
// does, with env as the only environment, and returns what is wrong with it:
// a load error, or a difference from what docs/DEPLOY.md promises.
func composeProblems(dir string, env map[string]string) []string {
	project, err := loadCompose(dir, env)
	if err != nil {
		return []string{err.Error()}
	}
	stages, err := dockerfileStages(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		return []string{err.Error()}
	}
	want := composeWant(env)
	var problems []string
	if names := slices.Sorted(maps.Keys(project.Services)); !slices.Equal(names, slices.Sorted(maps.Keys(want))) {
		problems = append(problems, fmt.Sprintf("services %v; want %v", names, slices.Sorted(maps.Keys(want))))
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if s, ok := project.Services[name]; ok {
			problems = append(problems, serviceProblems(s, want[name], stages, project.WorkingDir)...)
		}
	}
	problems = append(problems, brokerProblems(project)...)
	return append(problems, balancerProblems(project)...)
}

// balancerProblems returns what is wrong with project's haproxy service:
// the configuration it mounts must exist and pass HAProxy's own check
// (haproxy -c, Debian's package: the tests install it).
func balancerProblems(project *types.Project) []string {
	h := project.Services["haproxy"]
	i := slices.IndexFunc(h.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/usr/local/etc/haproxy/haproxy.cfg" })
	if i < 0 {
		return []string{fmt.Sprintf("haproxy: volumes %v; want a configuration file on /usr/local/etc/haproxy/haproxy.cfg", h.Volumes)}
	}
	out, err := exec.Command("haproxy", "-c", "-f", h.Volumes[i].Source).CombinedOutput()
	if err != nil {
		return []string{fmt.Sprintf("haproxy: haproxy -c -f %s: %v: %s", h.Volumes[i].Source, err, out)}
	}
	return nil
}

// serviceProblems returns how s differs from w; a service built from one of
// the stages of the Dockerfile in dir must wait for a healthy broker.
func serviceProblems(s types.ServiceConfig, w composeService, stages []string, dir string) []string {
	var problems []string
	problem := func(format string, args ...any) {
		problems = append(problems, s.Name+": "+fmt.Sprintf(format, args...))
	}
	if w.target != "" {
		var build types.BuildConfig
		if s.Build != nil {
			build = *s.Build
		}
		if build.Target != w.target || build.Context != dir {
			problem("builds target %q in %q; want %q in %s", build.Target, build.Context, w.target, dir)
		}
		if !slices.Contains(stages, build.Target) {
			problem("the Dockerfile has no stage %q (stages %v)", build.Target, stages)
		}
		if d := s.DependsOn["rabbitmq"]; d.Condition != types.ServiceConditionHealthy {
			problem("depends on rabbitmq with condition %q; want %s", d.Condition, types.ServiceConditionHealthy)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(w.env)) {
		if got := s.Environment[k]; got == nil || *got != w.env[k] {
			problem("%s=%s; want %q", k, deref(got), w.env[k])
		}
	}
	var ports []string
	for _, p := range s.Ports {
		ports = append(ports, fmt.Sprintf("%s:%s:%d", p.HostIP, p.Published, p.Target))
	}
	if !slices.Equal(ports, w.ports) {
		problem("publishes %v; want %v (on 127.0.0.1 only)", ports, w.ports)
	}
	if replicas := deployReplicas(s); replicas != w.replicas {
		problem("%d replicas; want %d", replicas, w.replicas)
	}
	return problems
}

// brokerProblems returns what is wrong with project's rabbitmq service: the
// healthcheck the others wait for, and where its data lives.
func brokerProblems(project *types.Project) []string {
	var problems []string
	rabbitmq := project.Services["rabbitmq"]
	if h := rabbitmq.HealthCheck; h == nil || h.Disable || !slices.Contains(h.Test, "rabbitmq-diagnostics") {
		problems = append(problems, "rabbitmq: no healthcheck running rabbitmq-diagnostics, which the others wait for")
	}
	if !slices.ContainsFunc(rabbitmq.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Source == "rabbitmq-data" && v.Target == "/var/lib/rabbitmq"
	}) || project.Volumes["rabbitmq-data"].Name == "" {
		problems = append(problems, fmt.Sprintf("rabbitmq: volumes %v; want the named volume rabbitmq-data on /var/lib/rabbitmq", rabbitmq.Volumes))
	}
	if rabbitmq.Hostname != "rabbitmq" {
		problems = append(problems, fmt.Sprintf("rabbitmq: hostname %q; want rabbitmq, fixed so that its data outlives the container", rabbitmq.Hostname))
	}
	return problems
}

// composeService is what docker-compose.yml must say about one service.
type composeService struct {
	target   string            // the Dockerfile stage it builds; "" for an image
	env      map[string]string // a subset of its environment
	ports    []string          // every published port, as host_ip:published:target
	replicas int               // 1 unless deploy.replicas says more
}

// composeWant returns what docs/DEPLOY.md promises of each service when the
// compose file is loaded with env.
func composeWant(env map[string]string) map[string]composeService {
	get := func(key, value string) string {
		if v, ok := env[key]; ok {
			return v
		}
		return value
	}
	user, pass := get("RABBITMQ_DEFAULT_USER", "atasks"), get("RABBITMQ_DEFAULT_PASS", "atasks")
	url := "amqp://" + user + ":" + pass + "@rabbitmq:5672/"
	return map[string]composeService{
		"rabbitmq": {
			env: map[string]string{"RABBITMQ_DEFAULT_USER": user, "RABBITMQ_DEFAULT_PASS": pass},
			ports: []string{"127.0.0.1:" + get("RABBITMQ_PORT", "5672") + ":5672",
				"127.0.0.1:" + get("RABBITMQ_MANAGEMENT_PORT", "15672") + ":15672"},
			replicas: 1,
		},
		"gateway": {
			target:   "gateway",
			env:      map[string]string{"ATASKS_AMQP_URL": url, "ATASKS_HISTORY": "true", "ATASKS_INSECURE": "true"},
			replicas: 2,
		},
		"haproxy": {
			ports:    []string{"127.0.0.1:" + get("GATEWAY_PORT", "8080") + ":8080"},
			replicas: 1,
		},
		"worker": {
			target:   "worker",
			env:      map[string]string{"ATASKS_AMQP_URL": url},
			replicas: 2,
		},
	}
}

// loadCompose loads dir's docker-compose.yml with compose-go, the loader of
// Docker Compose, resolving paths against dir and variables from env only.
func loadCompose(dir string, env map[string]string) (*types.Project, error) {
	var vars []string
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	options, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithName("atasks"), cli.WithWorkingDirectory(dir), cli.WithResolvedPaths(true), cli.WithEnv(vars))
	if err != nil {
		return nil, err
	}
	return options.LoadProject(context.Background())
}

// dockerfileStages returns the names of the stages (FROM … AS name) of the
// Dockerfile at path.
func dockerfileStages(path string) ([]string, error) {
	dockerfile, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var stages []string
	for _, m := range regexp.MustCompile(`(?mi)^FROM\s+\S+\s+AS\s+(\S+)`).FindAllSubmatch(dockerfile, -1) {
		stages = append(stages, string(m[1]))
	}
	return stages, nil
}

// deployReplicas returns how many containers of s compose starts.
func deployReplicas(s types.ServiceConfig) int {
	if s.Deploy == nil || s.Deploy.Replicas == nil {
		return 1
	}
	return *s.Deploy.Replicas
}

// deref returns *s, or "unset" for nil.
func deref(s *string) string {
	if s == nil {
		return "unset"
	}
	return *s
}

// docker-compose.cluster.yml layered over docker-compose.yml, as
// docs/DEPLOY.md runs them: three RabbitMQ nodes that find each other by
// the names in deploy/rabbitmq-cluster.conf and share a cookie, each with
// its data in a volume of its own; gateways and workers given all three
// and waiting for all three.
func TestComposeClusterFile(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	options, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml"), filepath.Join(root, "docker-compose.cluster.yml")},
		cli.WithName("atasks"), cli.WithWorkingDirectory(root), cli.WithResolvedPaths(true), cli.WithEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nodes := []string{"rabbitmq", "rabbitmq-2", "rabbitmq-3"}
	if names := slices.Sorted(maps.Keys(project.Services)); !slices.Equal(names, []string{"gateway", "haproxy", "rabbitmq", "rabbitmq-2", "rabbitmq-3", "worker"}) {
		t.Fatalf("services %v", names)
	}
	conf := ""
	var urls []string
	for _, name := range nodes {
		s := project.Services[name]
		if s.Hostname != name {
			t.Errorf("%s: hostname %q; want %q (the node's name, in the cluster's configuration)", name, s.Hostname, name)
		}
		if got := s.Environment["RABBITMQ_ERLANG_COOKIE"]; got == nil || *got != "atasks-cluster-cookie" {
			t.Errorf("%s: RABBITMQ_ERLANG_COOKIE=%s; want the cluster's cookie", name, deref(got))
		}
		if h := s.HealthCheck; h == nil || h.Disable || !slices.Contains(h.Test, "rabbitmq-diagnostics") {
			t.Errorf("%s: no rabbitmq-diagnostics healthcheck", name)
		}
		data, cluster := false, ""
		for _, v := range s.Volumes {
			switch v.Target {
			case "/var/lib/rabbitmq":
				data = v.Type == types.VolumeTypeVolume && v.Source == name+"-data" && project.Volumes[v.Source].Name != ""
			case "/etc/rabbitmq/conf.d/90-cluster.conf":
				cluster = v.Source
			}
		}
		if !data {
			t.Errorf("%s: volumes %v; want the named volume %s-data on /var/lib/rabbitmq", name, s.Volumes, name)
		}
		if cluster == "" || conf != "" && cluster != conf {
			t.Errorf("%s: mounts %q on /etc/rabbitmq/conf.d/90-cluster.conf; want the cluster's configuration, as every node", name, cluster)
		}
		conf = cluster
		urls = append(urls, "amqp://atasks:atasks@"+name+":5672/")
		if name != "rabbitmq" && len(s.Ports) > 0 {
			t.Errorf("%s publishes %v; only the first node's ports are published", name, s.Ports)
		}
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	var named []string
	for _, m := range regexp.MustCompile(`(?m)^cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)$`).FindAllStringSubmatch(string(b), -1) {
		named = append(named, m[1])
	}
	if !slices.Equal(named, nodes) || !strings.Contains(string(b), "cluster_formation.peer_discovery_backend = classic_config") {
		t.Errorf("%s names the nodes %v for classic_config discovery; want %v", conf, named, nodes)
	}
	if !strings.Contains(string(b), "cluster_partition_handling = pause_minority") {
		t.Errorf("%s: no cluster_partition_handling = pause_minority", conf)
	}
	for _, name := range []string{"gateway", "worker"} {
		s := project.Services[name]
		if got, want := deref(s.Environment["ATASKS_AMQP_URL"]), strings.Join(urls, ","); got != want {
			t.Errorf("%s: ATASKS_AMQP_URL=%s; want %s", name, got, want)
		}
		for _, node := range nodes {
			if d := s.DependsOn[node]; d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s: depends on %s with condition %q; want %s", name, node, d.Condition, types.ServiceConditionHealthy)
			}
		}
	}
}
