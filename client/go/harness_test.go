package stpeter_test

// The test harness: a real st-peter server (the `st-peter` binary) on a free port with a
// temp SQLite file, and users made with its admin CLI on the same database.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	stpeter "github.com/st-peter/st-peter/client/go"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// serverBinary is $ST_PETER_BIN, else target/debug/st-peter of the repository, built with
// cargo when missing.
func serverBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if bin := os.Getenv("ST_PETER_BIN"); bin != "" {
			binPath = bin
			return
		}
		root, err := filepath.Abs("../..")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(root, "target", "debug", "st-peter")
		if _, err := os.Stat(binPath); err == nil {
			return
		}
		cmd := exec.Command("cargo", "build", "-p", "st-peter-server", "--bin", "st-peter")
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			binErr = fmt.Errorf("building the server: %w", err)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

type testServer struct {
	t      testing.TB
	bin    string
	dbURL  string
	addr   string // empty until the first start has bound a port
	ready  string // the --ready-file the server writes its address to once it listens
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	log    *syncWriter // stderr as the server writes it, for reading while it runs
	exited chan struct{}
}

// freeAddr is a loopback address with a port nothing listens on (bound, then released),
// for the tests of a server that is not there.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startServer runs `st-peter serve` on a port the server picks (127.0.0.1:0) with a
// fresh database, and learns the port from its ready file; it is stopped when the test
// ends.
func startServer(t testing.TB, extraArgs ...string) *testServer {
	t.Helper()
	dir := t.TempDir()
	s := &testServer{
		t:     t,
		bin:   serverBinary(t),
		dbURL: "sqlite://" + filepath.Join(dir, "st-peter.db"),
		ready: filepath.Join(dir, "ready"),
	}
	s.start(extraArgs...)
	t.Cleanup(s.stop)
	return s
}

// start runs the server, on the address it had before when it is started again, and
// waits for its ready file: the server writes it once the listener is bound.
func (s *testServer) start(extraArgs ...string) {
	s.t.Helper()
	listen := s.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	if err := os.Remove(s.ready); err != nil && !os.IsNotExist(err) {
		s.t.Fatal(err)
	}
	args := append([]string{"serve", "--listen", listen, "--database-url", s.dbURL,
		"--ready-file", s.ready}, extraArgs...)
	s.cmd = exec.Command(s.bin, args...)
	s.stderr = &bytes.Buffer{}
	s.log = &syncWriter{w: s.stderr}
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			s.t.Fatalf("st-peter exited at start: %s", s.stderr.String())
		default:
		}
		if text, err := os.ReadFile(s.ready); err == nil {
			s.addr = strings.TrimSpace(string(text))
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("st-peter wrote no ready file within 30 s: %s", s.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop ends the server (SIGTERM, then kill); its database stays for start again.
func (s *testServer) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// terminate stops the server with SIGTERM, as an operator or an orchestrator does, and
// answers how it exited; its database stays for start again.
func (s *testServer) terminate() error {
	s.t.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		s.t.Fatal("st-peter is not running")
	}
	defer func() { s.cmd = nil }()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	select {
	case <-s.exited:
		if state := s.cmd.ProcessState; !state.Success() {
			return fmt.Errorf("st-peter exited with %s: %s", state, s.stderr.String())
		}
		return nil
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		s.t.Fatalf("st-peter did not exit within 30 s of SIGTERM: %s", s.stderr.String())
		return nil
	}
}

// restartOnNewDatabase stops the server and starts it again on the same address with a
// new, empty database: a server whose revocation log a client's sequence is not from.
func (s *testServer) restartOnNewDatabase() {
	s.t.Helper()
	s.stop()
	s.dbURL = "sqlite://" + filepath.Join(s.t.TempDir(), "st-peter.db")
	s.start()
}

func (s *testServer) target() string { return "http://" + s.addr }

// admin runs an admin command of the binary on the server's database.
func (s *testServer) admin(stdin string, args ...string) []byte {
	s.t.Helper()
	cmd := exec.Command(s.bin, append(args, "--database-url", s.dbURL, "--json")...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("st-peter %v: %v: %s", args, err, stderr.String())
	}
	return out
}

type newUser struct {
	Handle, Email, Phone, DisplayName, Password string
}

// addUser creates a user and answers their user_id.
func (s *testServer) addUser(u newUser) string {
	s.t.Helper()
	args := []string{"user", "add", "--handle", u.Handle, "--password-stdin"}
	if u.Email != "" {
		args = append(args, "--email", u.Email)
	}
	if u.Phone != "" {
		args = append(args, "--phone", u.Phone)
	}
	if u.DisplayName != "" {
		args = append(args, "--display-name", u.DisplayName)
	}
	var created struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(s.admin(u.Password+"\n", args...), &created); err != nil || created.UserID == "" {
		s.t.Fatalf("user add answered no user_id: %v", err)
	}
	return created.UserID
}

// serviceKey is a service account and one API key of it, from the admin CLI.
type serviceKey struct {
	UserID string
	KeyID  string
	APIKey string
}

// addService creates a service account with the roles and an API key.
func (s *testServer) addService(name string, roles ...string) serviceKey {
	s.t.Helper()
	var created struct {
		UserID string `json:"user_id"`
		Kind   string `json:"kind"`
	}
	if err := json.Unmarshal(s.admin("", "service", "add", name), &created); err != nil || created.UserID == "" || created.Kind != "service" {
		s.t.Fatalf("service add answered %+v: %v", created, err)
	}
	for _, role := range roles {
		s.grantRole(name, role)
	}
	key := s.createKey(name)
	key.UserID = created.UserID
	return key
}

// createKey makes another API key of a service account (UserID left empty).
func (s *testServer) createKey(name string) serviceKey {
	s.t.Helper()
	var created struct {
		KeyID  string `json:"key_id"`
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal(s.admin("", "service", "key", "create", name), &created); err != nil ||
		created.KeyID == "" || !strings.HasPrefix(created.APIKey, "stk_") {
		s.t.Fatalf("service key create answered no key_id or stk_ key: %v", err)
	}
	return serviceKey{KeyID: created.KeyID, APIKey: created.APIKey}
}

func (s *testServer) revokeKey(keyID string) {
	s.admin("", "service", "key", "revoke", keyID)
}

func (s *testServer) grantRole(identifier, role string) {
	s.admin("", "user", "role", "grant", identifier, role)
}

func (s *testServer) disable(identifier string) {
	s.admin("", "user", "disable", identifier)
}

// revokeSession revokes one session with the admin CLI; the server need not be running.
func (s *testServer) revokeSession(token string) {
	s.admin(token+"\n", "session", "revoke", "--token-stdin")
}

// enrollTOTP enrolls TOTP and answers the otpauth:// URI.
func (s *testServer) enrollTOTP(identifier string) string {
	s.t.Helper()
	var enrolled struct {
		OtpauthURI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal(s.admin("", "user", "totp", "enroll", identifier), &enrolled); err != nil || enrolled.OtpauthURI == "" {
		s.t.Fatalf("totp enroll answered no otpauth_uri: %v", err)
	}
	return enrolled.OtpauthURI
}

// audits counts the server's audit lines (one per security-relevant act, on stderr) of
// an event with an outcome, about a user.
func (s *testServer) audits(event, outcome, userID string) int {
	s.log.mu.Lock()
	text := s.stderr.String()
	s.log.mu.Unlock()
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, " audit: ") && strings.Contains(line, `event="`+event+`"`) &&
			strings.Contains(line, `outcome="`+outcome+`"`) && strings.Contains(line, `user_id="`+userID+`"`) {
			n++
		}
	}
	return n
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// rpcCounter counts the RPCs a client sends, by method name.
type rpcCounter struct {
	mu     sync.Mutex
	counts map[string]int
	total  atomic.Int64
}

func (c *rpcCounter) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		c.mu.Lock()
		if c.counts == nil {
			c.counts = map[string]int{}
		}
		c.counts[method[strings.LastIndex(method, "/")+1:]]++
		c.mu.Unlock()
		c.total.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// reset forgets the RPCs counted so far.
func (c *rpcCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts = nil
	c.total.Store(0)
}

func (c *rpcCounter) get(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[method]
}

// streamWatch counts the streams a client opens (the revocation feed's) and those that
// ended, as the client saw them.
type streamWatch struct {
	opened, ended atomic.Int64
	// slowEnd holds back the error that ends a stream: a slow teardown.
	slowEnd time.Duration
}

func (w *streamWatch) interceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		stream, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		w.opened.Add(1)
		return &watchedStream{ClientStream: stream, watch: w}, nil
	}
}

type watchedStream struct {
	grpc.ClientStream
	watch *streamWatch
	once  sync.Once
}

func (s *watchedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.once.Do(func() {
			time.Sleep(s.watch.slowEnd)
			s.watch.ended.Add(1)
		})
	}
	return err
}

// countingClient is a client of s whose RPCs are counted.
func countingClient(t testing.TB, target string, opts ...stpeter.Option) (*stpeter.Client, *rpcCounter) {
	t.Helper()
	counter := &rpcCounter{}
	opts = append(opts, stpeter.WithDialOptions(grpc.WithUnaryInterceptor(counter.interceptor())))
	client, err := stpeter.Connect(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client, counter
}

// feedDeadline bounds the waits for the revocation feed: far above its 1 s contract and
// the resubscription backoff, so a loaded machine does not fail the tests.
const feedDeadline = 20 * time.Second

// subscribedClient is a counting client whose revocation feed has caught up, with its
// counter reset: the first checkpoint of a subscription drops what was cached before it,
// so cache tests start after it.
func subscribedClient(t testing.TB, target string, opts ...stpeter.Option) (*stpeter.Client, *rpcCounter) {
	t.Helper()
	client, counter := countingClient(t, target, opts...)
	// Any verify starts the subscription; this token is no other test's.
	client.VerifyToken(context.Background(), "stp_feed-warm-up-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	awaitFeed(t, client, "the first subscription", func(s stpeter.FeedStatus) bool { return s.Subscribed })
	counter.reset()
	return client, counter
}

// awaitFeed polls the client's feed status until done says yes, and answers how long it
// took.
func awaitFeed(t testing.TB, client *stpeter.Client, what string, done func(stpeter.FeedStatus) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !done(client.FeedStatus()) {
		if time.Since(start) > feedDeadline {
			t.Fatalf("%s: not within %s (feed status %+v)", what, feedDeadline, client.FeedStatus())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// stoppedClock is a clock for the client's cache that moves only when told to, so a
// test can judge short TTLs without racing the wall clock.
type stoppedClock struct {
	base   time.Time
	offset atomic.Int64
}

func newStoppedClock() *stoppedClock { return &stoppedClock{base: time.Now()} }

func (c *stoppedClock) now() time.Time          { return c.base.Add(time.Duration(c.offset.Load())) }
func (c *stoppedClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// totpCode is the RFC 6238 code (SHA-1, 6 digits, 30 s) of an otpauth:// URI's secret at t.
func totpCode(t testing.TB, uri string, at time.Time) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.ToUpper(u.Query().Get("secret"))
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.TrimRight(secret, "="))
	if err != nil {
		t.Fatalf("otpauth secret: %v", err)
	}
	var counter [8]byte
	binary.BigEndian.PutUint64(counter[:], uint64(at.Unix()/30))
	mac := hmac.New(sha1.New, key)
	mac.Write(counter[:])
	sum := mac.Sum(nil)
	offset := sum[len(sum)-1] & 0x0f
	value := binary.BigEndian.Uint32(sum[offset:offset+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", value%1_000_000)
}

// wrongTOTPCode is a 6-digit code that is none of the codes the server accepts around at
// (the previous, current and next step).
func wrongTOTPCode(t testing.TB, uri string, at time.Time) string {
	t.Helper()
	accepted := map[string]bool{}
	for _, step := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		accepted[totpCode(t, uri, at.Add(step))] = true
	}
	for n := 0; ; n++ {
		if code := fmt.Sprintf("%06d", n); !accepted[code] {
			return code
		}
	}
}

func timeUnix(seconds int64) time.Time { return time.Unix(seconds, 0) }
