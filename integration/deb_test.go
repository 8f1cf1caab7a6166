package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The package the test installs carries this version, so that a later run
// can tell its own leftover (a run killed before its cleanup) from a
// sipdispatch an operator installed, which it refuses to touch.
const debTestVersion = "0.0.0~inttest"

// debLock serialises the package tests of every test process on the machine:
// they all install the same package name.
const debLock = "/tmp/sipdispatch-deb-test.lock"

// TestDebPackageInstallRunRemove builds the .deb with `make deb`, installs it
// with dpkg, checks the files, the conffiles, the system user, the data dir
// and the unit (systemd-analyze verify), runs the unit's ExecStart as the
// unit's user with its capabilities, environment and no_new_privs (systemd is
// not PID 1 here) on a test address given as serve flags, checks it answers
// OPTIONS, runs ExecReload against it, stops it by PID with SIGTERM and
// purges the package: no file, directory, user or group may remain
// (docs/operations.md, "Install as a service").
func TestDebPackageInstallRunRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and installs a Debian package")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the package test installs a .deb with dpkg: run it as root (CI does)")
	}
	for _, tool := range []string{"dpkg", "dpkg-query", "make", "setpriv", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (.ci/setup installs it): %v", tool, err)
		}
	}
	lockDeb(t)
	switch v := installedVersion(t); v {
	case "":
	case debTestVersion:
		t.Logf("purging the package a killed test run left installed")
		dpkg(t, "--purge", "sipdispatch")
	default:
		t.Fatalf("sipdispatch %s is installed on this machine; the test will not replace it", v)
	}

	// Build.
	dir := t.TempDir()
	build := exec.Command("make", "deb", "DEB_DIR="+dir, "DEB_VERSION="+debTestVersion)
	build.Dir = ".."
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "sipdispatch_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v, want one sipdispatch_*.deb in %s", debs, dir)
	}
	t.Logf("make deb: %s in %v", filepath.Base(debs[0]), time.Since(start).Round(time.Millisecond))

	// Install; from here on the machine is restored whatever happens.
	var node *exec.Cmd
	t.Cleanup(func() {
		if node != nil && node.ProcessState == nil {
			node.Process.Kill()
			node.Wait()
		}
		if installedVersion(t) != "" {
			dpkg(t, "--purge", "sipdispatch")
		}
	})
	dpkg(t, "-i", debs[0])

	files := strings.Fields(output(t, "dpkg", "-L", "sipdispatch"))
	for _, f := range []string{"/usr/bin/sipdispatch", "/usr/lib/systemd/system/sipdispatch.service",
		"/etc/sipdispatch/sipdispatch.yaml", "/etc/sipdispatch/dispatcher.list"} {
		if !slices.Contains(files, f) {
			t.Errorf("dpkg -L sipdispatch lacks %s: %v", f, files)
		}
	}
	conffiles := output(t, "dpkg-query", "-W", "-f=${Conffiles}", "sipdispatch")
	for _, f := range []string{"/etc/sipdispatch/sipdispatch.yaml", "/etc/sipdispatch/dispatcher.list"} {
		if !strings.Contains(conffiles, f+" ") {
			t.Errorf("%s is not a conffile: %q", f, conffiles)
		}
	}
	u, err := user.Lookup("sipdispatch")
	if err != nil {
		t.Fatalf("postinst made no user: %v", err)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid == 0 || uid >= 1000 {
		t.Errorf("user sipdispatch has uid %s, want a system uid", u.Uid)
	}
	uid, _ := strconv.Atoi(u.Uid)
	assertOwned(t, "/var/lib/sipdispatch", uid, 0o750)
	if out, err := exec.Command("systemd-analyze", "verify", "/usr/lib/systemd/system/sipdispatch.service").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if out, err := exec.Command("/usr/bin/sipdispatch", "check", "-config", "/etc/sipdispatch/sipdispatch.yaml").CombinedOutput(); err != nil {
		t.Errorf("the packaged defaults fail check: %v\n%s", err, out)
	}

	unit := parseUnit(t, "/usr/lib/systemd/system/sipdispatch.service")
	for key, want := range map[string]string{
		"User": "sipdispatch", "Group": "sipdispatch", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "NoNewPrivileges": "yes", "StateDirectory": "sipdispatch",
		"ReadWritePaths": "/var/lib/sipdispatch", "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet": "CAP_NET_BIND_SERVICE", "Restart": "on-failure",
		"ExecReload": "/usr/bin/sipdispatch reload",
	} {
		if got := strings.Join(unit[key], " | "); got != want {
			t.Errorf("unit %s=%q, want %q", key, got, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Run ExecStart as systemd would: the unit's user and group, only its
	// capability (inherited, ambient, bounding), no_new_privs, the unit's
	// environment only, working directory /. The test's address comes as
	// serve flags after the unit's own arguments.
	ip := nextIP()
	sipAddr := fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	apiAddr := fmt.Sprintf("%s:%d", ip, freePort(t, ip))
	env := append(unit["Environment"], "SIPDISPATCH_API=http://"+apiAddr) // the test's api.listen
	execStart := append(strings.Fields(unit["ExecStart"][0]), "-listen", "udp:"+sipAddr, "-api", apiAddr)
	var logs bytes.Buffer
	node = asUnitUser(unit, env, execStart...)
	node.Stdout, node.Stderr = &logs, &logs
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { node.Wait(); close(exited) }()
	waitFor(t, "the packaged node to answer OPTIONS on "+sipAddr, 20*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("ExecStart exited: %v\n%s", node.ProcessState, logs.String())
		default:
		}
		return sipPing(sipAddr) == 200
	})
	status := procStatus(t, node.Process.Pid)
	if got := strings.Fields(status["Uid"]); len(got) == 0 || got[0] != u.Uid {
		t.Errorf("node runs as uid %v, want %s", got, u.Uid)
	}
	for _, k := range []string{"CapEff", "CapBnd", "CapAmb"} {
		if status[k] != "0000000000000400" { // only CAP_NET_BIND_SERVICE (bit 10)
			t.Errorf("node %s = %s, want only CAP_NET_BIND_SERVICE", k, status[k])
		}
	}
	if status["NoNewPrivs"] != "1" {
		t.Errorf("node NoNewPrivs = %q", status["NoNewPrivs"])
	}
	assertOwned(t, "/var/lib/sipdispatch/raft", uid, 0)

	// systemctl reload runs ExecReload as the unit's user with its environment.
	reload := asUnitUser(unit, env, strings.Fields(unit["ExecReload"][0])...)
	if out, err := reload.CombinedOutput(); err != nil || !strings.Contains(string(out), "successfully reloaded") {
		t.Errorf("ExecReload: %v\n%s", err, out)
	}

	// systemctl stop: SIGTERM to the main PID.
	node.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if !node.ProcessState.Success() {
			t.Errorf("node exited with %v after SIGTERM\n%s", node.ProcessState, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("node still running 15 s after SIGTERM\n%s", logs.String())
	}

	dpkg(t, "--purge", "sipdispatch")
	if v := installedVersion(t); v != "" {
		t.Errorf("still installed after purge: %s", v)
	}
	for _, p := range append(files, "/var/lib/sipdispatch") {
		if p == "/etc" || p == "/usr" || p == "/usr/bin" || p == "/usr/lib" || p == "/usr/lib/systemd" || p == "/usr/lib/systemd/system" {
			continue // shared with other packages
		}
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left after purge", p)
		}
	}
	if _, err := user.Lookup("sipdispatch"); err == nil {
		t.Error("user sipdispatch left after purge")
	}
	if _, err := user.LookupGroup("sipdispatch"); err == nil {
		t.Error("group sipdispatch left after purge")
	}
	if t.Failed() {
		t.Logf("node log:\n%s", logs.String())
	}
}

// lockDeb takes the machine-wide package-test lock until the test ends.
func lockDeb(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(debLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the package test lock "+debLock, 5*time.Minute, func() bool {
		return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
	})
	t.Cleanup(func() { f.Close() }) // closing releases the lock, after the purge (cleanups run last-in first-out)
}

// installedVersion is the version of the sipdispatch package dpkg knows of
// (installed, or with files left), "" when there is none.
func installedVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", "sipdispatch").Output()
	if err != nil {
		return "" // not known to dpkg
	}
	status, version, _ := strings.Cut(string(out), " ")
	if status == "not-installed" {
		return ""
	}
	return version // installed, or half-installed, or only its conffiles left
}

// dpkg runs dpkg with args, waiting while another dpkg or apt holds its lock.
func dpkg(t *testing.T, args ...string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil {
			return
		}
		if !bytes.Contains(out, []byte("lock")) || time.Now().After(deadline) {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(time.Second)
	}
}

// output runs name with args and returns its standard output.
func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out)
}

// parseUnit reads a unit file's [Service] section: key → values in order.
func parseUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	section := ""
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = line
		case section == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			keys[k] = append(keys[k], v)
		}
	}
	for _, k := range []string{"User", "Group", "ExecStart", "ExecReload", "AmbientCapabilities"} {
		if len(keys[k]) != 1 {
			t.Fatalf("unit %s: %s=%v, want one", path, k, keys[k])
		}
	}
	return keys
}

// asUnitUser is the command systemd would run for argv: the unit's User and
// Group with their groups, its AmbientCapabilities as the only capabilities
// (inheritable, ambient and bounding), no_new_privs, only the environment
// env, working directory /.
func asUnitUser(unit map[string][]string, env []string, argv ...string) *exec.Cmd {
	var caps []string
	for _, c := range strings.Fields(unit["AmbientCapabilities"][0]) {
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	set := "-all," + strings.Join(caps, ",")
	args := []string{"--reuid=" + unit["User"][0], "--regid=" + unit["Group"][0], "--init-groups", "--no-new-privs",
		"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set, "--", "env", "-i"}
	args = append(append(args, env...), argv...)
	cmd := exec.Command("setpriv", args...)
	cmd.Dir = "/"
	return cmd
}

// procStatus is /proc/PID/status as key → value.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// assertOwned checks that path belongs to uid and, when mode is not 0, has that mode.
func assertOwned(t *testing.T, path string, uid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
		t.Errorf("%s owned by uid %d, want %d", path, st.Uid, uid)
	}
	if mode != 0 && fi.Mode().Perm() != mode {
		t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), mode)
	}
}
