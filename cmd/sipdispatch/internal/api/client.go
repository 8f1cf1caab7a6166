package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client calls one node's JSON-RPC endpoint. It is not safe for concurrent
// use (it numbers its requests).
type Client struct {
	url   string // …/RPC
	token string
	hc    *http.Client
	id    int
}

// NewClient returns a client of the API at base (http://host:port, or
// host:port), sending token as a bearer token when it is not empty; timeout
// bounds each call.
func NewClient(base, token string, timeout time.Duration) *Client {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{
		url:   strings.TrimSuffix(base, "/") + "/RPC",
		token: token,
		hc:    &http.Client{Timeout: timeout},
	}
}

// Call invokes method and returns its raw result; a JSON-RPC error comes
// back as *Error.
func (c *Client) Call(ctx context.Context, method string, params ...any) (json.RawMessage, error) {
	c.id++
	req := map[string]any{"jsonrpc": "2.0", "method": method, "id": c.id}
	if len(params) > 0 {
		req["params"] = params
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.do(hreq)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: read reply: %w", method, err)
	}
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    string `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		// Not JSON-RPC: an auth refusal or something else on that port.
		return nil, fmt.Errorf("%s: %s: HTTP %d: %s", method, c.url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if r.Error != nil {
		return nil, &Error{Code: r.Error.Code, Message: r.Error.Message, Data: r.Error.Data}
	}
	if r.Result == nil {
		return nil, fmt.Errorf("%s: reply has neither result nor error", method)
	}
	return r.Result, nil
}

// Metrics returns the node's GET /metrics body (Prometheus text format).
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	url := strings.TrimSuffix(c.url, "/RPC") + "/metrics"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := c.do(hreq)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("metrics: read reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// do sends hreq with the client's token.
func (c *Client) do(hreq *http.Request) (*http.Response, error) {
	if c.token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.hc.Do(hreq)
}
