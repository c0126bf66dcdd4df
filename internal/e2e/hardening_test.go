package e2e

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atasks-go/atasks/gateway"
	"github.com/gorilla/websocket"
)

// A JSON integer of a million digits costs the gateway no more than its
// bytes: refused (beyond float64's range) in linear time over REST, and
// over WebSocket refused for rights before its input is looked at, each
// refused frame counting against the rate limit. Measured in the
// gateway's CPU time, read from /proc, not in wall time.
func TestHugeNumbersCostLittleCPU(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	const admin, reader = "admin-token-0123456789", "reader-token-0123456789"
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, fmt.Appendf(nil, "admin %s *:*\nreader %s default:read\n",
		gateway.FormatHash(gateway.HashToken(admin)), gateway.FormatHash(gateway.HashToken(reader))), 0o600); err != nil {
		t.Fatal(err)
	}
	gwp, gw := s.gatewayBinary("gateway-plain", "--amqp-url=", "--tokens", tokens, "--max-body", strconv.Itoa(4<<20), "--rate-limit", "5")
	huge := strings.Repeat("7", 1<<20)

	before := cpuSeconds(t, gwp)
	req, _ := http.NewRequest("POST", gw+"/v1/ns/default/tasks/demo.echo", strings.NewReader(huge))
	req.Header.Set("Authorization", "Bearer "+admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	inv := read(t, res)
	rest := cpuSeconds(t, gwp) - before
	if inv.status != 400 || inv.Code != "malformed_json" {
		t.Errorf("a million-digit integer over REST: %d %s", inv.status, inv.Code)
	}

	header := http.Header{"Sec-WebSocket-Protocol": {"atasks", "bearer." + base64.RawURLEncoding.EncodeToString([]byte(reader))}}
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(gw, "http")+"/v1/ws", header)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	before = cpuSeconds(t, gwp)
	codes := map[string]int{}
	const frames = 40
	for i := range frames {
		frame := fmt.Sprintf(`{"type":"call","ref":"r%d","ns":"seed","task":"request_parallel","input":%s}`, i, huge[:min(len(huge), 1<<20>>uint(min(i, 20)))])
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		var m struct {
			Type  string
			Error struct{ Code string }
		}
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		codes[m.Error.Code]++
	}
	wsCPU := cpuSeconds(t, gwp) - before
	if codes["forbidden"] == 0 || codes["too_many_requests"] == 0 || codes["forbidden"]+codes["too_many_requests"] != frames {
		t.Errorf("%d forbidden call frames under a limit of 5/s: %v; want forbidden, then too_many_requests", frames, codes)
	}
	// Before: 2.3–3.7 s for one such integer over REST, 7.2 s for three frames.
	if rest > 0.5 || wsCPU > 1.5 {
		t.Errorf("gateway CPU: %.2f s for the REST call, %.2f s for %d WebSocket frames", rest, wsCPU, frames)
	}
	t.Logf("gateway CPU for a million-digit integer: %.2f s over REST (400); %.2f s for %d forbidden WebSocket call frames of up to 1 MB (%v)", rest, wsCPU, frames, codes)
}

// cpuSeconds returns the CPU time p has used, user and system.
func cpuSeconds(t *testing.T, p *proc) float64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ, 100 on Linux
}
