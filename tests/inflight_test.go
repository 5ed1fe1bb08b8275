package tests

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/demotest"
)

// TestInFlightGauge: baton_http_requests_in_flight counts a request from
// the moment the handler has it until its reply, as /metrics sees it: a
// POST /echo whose body is held back is one, and the scrape itself another.
func TestInFlightGauge(t *testing.T) {
	p := demotest.Start(t, demoV1)
	if got := scrape(t, p.URL)["baton_http_requests_in_flight"]; got != "1" {
		t.Fatalf("at rest: baton_http_requests_in_flight = %q, want 1 (the scrape)", got)
	}
	c, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	// the echo handler reads the body to its end: it waits for the rest
	if _, err := fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"); err != nil {
		t.Fatal(err)
	}
	// the handler has it once the server read the headers; no event says
	// so outside the process, hence the bounded poll
	deadline := time.Now().Add(10 * time.Second)
	for scrape(t, p.URL)["baton_http_requests_in_flight"] != "2" {
		if time.Now().After(deadline) {
			t.Fatalf("the held POST is not counted in flight: %v", scrape(t, p.URL)["baton_http_requests_in_flight"])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := scrape(t, p.URL)["baton_http_requests_in_flight"]; got != "1" {
		t.Errorf("after the reply: baton_http_requests_in_flight = %q, want 1", got)
	}
}
