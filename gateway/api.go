package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/hub"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// The HTTP API (docs/http-api.md): what an app's backend calls with a
// service token, and what a user token may call for itself.

func (s *Server) routeAPI(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/conversations", s.api("create", s.apiCreate))
	mux.HandleFunc("GET /v1/conversations", s.api("list", s.apiList))
	mux.HandleFunc("GET /v1/conversations/{id}", s.api("get", s.apiGet))
	mux.HandleFunc("PATCH /v1/conversations/{id}", s.api("rename", s.apiRename))
	mux.HandleFunc("POST /v1/conversations/{id}/members", s.api("add", s.apiAdd))
	mux.HandleFunc("DELETE /v1/conversations/{id}/members/{user}", s.api("remove", s.apiRemove))
	mux.HandleFunc("GET /v1/conversations/{id}/messages", s.api("history", s.apiHistory))
	mux.HandleFunc("POST /v1/messages", s.api("send", s.apiSend))
	mux.HandleFunc("POST /v1/topics/{topic}", s.api("publish", s.apiPublish))
	mux.HandleFunc("GET /v1/presence", s.api("presence", s.apiPresence))
	mux.HandleFunc("PUT /v1/devices/{device}", s.api("put_device", s.apiPutDevice))
	mux.HandleFunc("DELETE /v1/devices/{device}", s.api("remove_device", s.apiRemoveDevice))
	mux.HandleFunc("GET /v1/devices", s.api("devices", s.apiDevices))
}

// apiRequest is a request after authentication.
type apiRequest struct {
	r      *http.Request
	ctx    context.Context
	claims *auth.Claims
	body   []byte
}

// actor resolves who acts: a user token acts as itself; a service token as
// the user named by "as" (body field or query), or as the system.
func (q *apiRequest) actor(as string) (hub.Actor, error) {
	if as == "" {
		as = q.r.URL.Query().Get("as")
	}
	if q.claims.Service {
		if as != "" {
			if err := auth.ValidID(as); err != nil {
				return hub.Actor{}, protocol.Errorf(protocol.CodeInvalid, "as: %v", err)
			}
		}
		return hub.Actor{User: as, Service: true}, nil
	}
	if as != "" && as != q.claims.User() {
		return hub.Actor{}, protocol.Errorf(protocol.CodeForbidden, "only service tokens act as other users")
	}
	return hub.Actor{User: q.claims.User(), Device: q.claims.Device}, nil
}

func (q *apiRequest) decode(v any) error {
	if len(q.body) == 0 {
		return protocol.Errorf(protocol.CodeInvalid, "request body is required")
	}
	if err := json.Unmarshal(q.body, v); err != nil {
		return protocol.Errorf(protocol.CodeBadFrame, "malformed JSON body: %s", truncate(err.Error(), 120))
	}
	return nil
}

// actorBody is the "as" field any request body may carry.
type actorBody struct {
	As string `json:"as"`
}

func (b *actorBody) as() string { return b.As }

// decodeActor decodes the JSON body into v and resolves who acts.
func (q *apiRequest) decodeActor(v interface{ as() string }) (hub.Actor, error) {
	if err := q.decode(v); err != nil {
		return hub.Actor{}, err
	}
	return q.actor(v.as())
}

type apiHandler func(q *apiRequest) (status int, body any, err error)

// api wraps a handler with authentication, rate limits, the body limit,
// error mapping and metrics.
func (s *Server) api(route string, fn apiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		status := s.serveAPI(w, r, fn)
		s.m.httpRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	}
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, fn apiHandler) int {
	fail := func(status int, err *protocol.Error) int {
		s.m.errors.WithLabelValues(err.Code).Inc()
		if status >= 500 {
			s.log.Warn("http api error", "path", r.URL.Path, "code", err.Code, "err", err.Message)
		} else {
			s.log.Info("http api refused", "path", r.URL.Path, "status", status, "code", err.Code, "err", err.Message)
		}
		writeHTTPError(w, status, err)
		return status
	}
	if s.draining.Load() {
		return fail(http.StatusServiceUnavailable, protocol.Errorf(protocol.CodeDraining, "node is draining"))
	}
	token, _ := auth.TokenFromRequest(r)
	claims, err := s.cfg.Verifier.Verify(token)
	if err != nil {
		code := protocol.CodeUnauthorized
		if errors.Is(err, auth.ErrExpired) {
			code = protocol.CodeTokenExpired
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
		return fail(http.StatusUnauthorized, &protocol.Error{Code: code, Message: "missing, invalid or expired token"})
	}
	now := s.cfg.Now()
	if !claims.Service {
		if ok, wait := s.users.take(claims.User(), now); !ok {
			w.Header().Set("Retry-After", retryAfterSeconds(wait))
			return fail(http.StatusTooManyRequests, &protocol.Error{Code: protocol.CodeRateLimited, Message: "slow down", RetryAfter: wait.Milliseconds() + 1})
		}
	}
	q := &apiRequest{r: r, claims: claims}
	if r.Body != nil && r.Method != http.MethodGet {
		body, err := readLimited(w, r, s.cfg.MaxHTTPBody)
		if err != nil {
			return fail(http.StatusRequestEntityTooLarge, protocol.Errorf(protocol.CodeTooLarge, "body exceeds %d bytes", s.cfg.MaxHTTPBody))
		}
		q.body = body
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	q.ctx = ctx
	status, body, err := fn(q)
	if err != nil {
		var perr *protocol.Error
		if !errors.As(err, &perr) {
			s.log.Error("unexpected api error", "path", r.URL.Path, "err", err)
			perr = protocol.Errorf(protocol.CodeInternal, "internal error")
		}
		st := httpStatus(perr.Code)
		if st == http.StatusTooManyRequests || st == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		return fail(st, perr)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if body != nil {
		_ = json.NewEncoder(w).Encode(body)
	}
	return status
}

// readLimited reads a request body of at most max bytes. Only a body over
// the limit is an error: one cut short is returned as read, and fails to
// decode.
func readLimited(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, err
	}
	return body, nil
}

// httpStatus maps protocol error codes to HTTP statuses.
func httpStatus(code string) int {
	switch code {
	case protocol.CodeBadFrame, protocol.CodeInvalid, protocol.CodeUnknownType:
		return http.StatusBadRequest
	case protocol.CodeUnauthorized, protocol.CodeTokenExpired:
		return http.StatusUnauthorized
	case protocol.CodeForbidden, protocol.CodeNotMember:
		return http.StatusForbidden
	case protocol.CodeNotFound:
		return http.StatusNotFound
	case protocol.CodeConflict, protocol.CodeLimit:
		return http.StatusConflict
	case protocol.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case protocol.CodeRateLimited:
		return http.StatusTooManyRequests
	case protocol.CodeUnavailable, protocol.CodeDraining:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

type httpErrorBody struct {
	Error struct {
		Code         string `json:"code"`
		Message      string `json:"message"`
		RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	} `json:"error"`
}

func writeHTTPError(w http.ResponseWriter, status int, e *protocol.Error) {
	var b httpErrorBody
	b.Error.Code, b.Error.Message, b.Error.RetryAfterMS = e.Code, e.Message, e.RetryAfter
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(b)
}

func (s *Server) apiCreate(q *apiRequest) (int, any, error) {
	var in struct {
		Title   string   `json:"title"`
		Members []string `json:"members"`
		actorBody
	}
	a, err := q.decodeActor(&in)
	if err != nil {
		return 0, nil, err
	}
	c, err := s.hub.Create(q.ctx, a, in.Title, in.Members)
	return http.StatusCreated, c, err
}

func (s *Server) apiList(q *apiRequest) (int, any, error) {
	a, err := q.actor("")
	if err != nil {
		return 0, nil, err
	}
	if a.User == "" {
		return 0, nil, protocol.Errorf(protocol.CodeInvalid, "service tokens list a user's conversations with as=<user>")
	}
	cs, err := s.hub.Conversations(q.ctx, a.User)
	if cs == nil {
		cs = []protocol.Conversation{}
	}
	return http.StatusOK, map[string]any{"convs": cs}, err
}

func (s *Server) apiGet(q *apiRequest) (int, any, error) {
	a, err := q.actor("")
	if err != nil {
		return 0, nil, err
	}
	c, err := s.hub.Conversation(q.ctx, a, q.r.PathValue("id"))
	return http.StatusOK, c, err
}

func (s *Server) apiRename(q *apiRequest) (int, any, error) {
	var in struct {
		Title string `json:"title"`
		actorBody
	}
	a, err := q.decodeActor(&in)
	if err != nil {
		return 0, nil, err
	}
	if err := s.hub.Rename(q.ctx, a, q.r.PathValue("id"), in.Title); err != nil {
		return 0, nil, err
	}
	return s.apiGetAs(q, a)
}

func (s *Server) apiGetAs(q *apiRequest, a hub.Actor) (int, any, error) {
	c, err := s.hub.Conversation(q.ctx, a, q.r.PathValue("id"))
	return http.StatusOK, c, err
}

func (s *Server) apiAdd(q *apiRequest) (int, any, error) {
	var in struct {
		Users []string `json:"users"`
		Role  string   `json:"role"`
		actorBody
	}
	a, err := q.decodeActor(&in)
	if err != nil {
		return 0, nil, err
	}
	if err := s.hub.AddMembers(q.ctx, a, q.r.PathValue("id"), in.Users, in.Role); err != nil {
		return 0, nil, err
	}
	return s.apiGetAs(q, a)
}

func (s *Server) apiRemove(q *apiRequest) (int, any, error) {
	a, err := q.actor("")
	if err != nil {
		return 0, nil, err
	}
	user := q.r.PathValue("user")
	conv := q.r.PathValue("id")
	if user == a.User && !a.Service {
		err = s.hub.Leave(q.ctx, a, conv)
	} else {
		err = s.hub.RemoveMembers(q.ctx, a, conv, []string{user})
	}
	return http.StatusNoContent, nil, err
}

func (s *Server) apiHistory(q *apiRequest) (int, any, error) {
	a, err := q.actor("")
	if err != nil {
		return 0, nil, err
	}
	var p storage.Page
	qs := q.r.URL.Query()
	for name, dst := range map[string]*uint64{"before": &p.Before, "after": &p.After} {
		if v := qs.Get(name); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, nil, protocol.Errorf(protocol.CodeInvalid, "%s must be a sequence number", name)
			}
			*dst = n
		}
	}
	if v := qs.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, nil, protocol.Errorf(protocol.CodeInvalid, "limit must be a positive number")
		}
		p.Limit = n
	}
	ms, more, err := s.hub.History(q.ctx, a, q.r.PathValue("id"), p)
	if ms == nil {
		ms = []protocol.Message{}
	}
	return http.StatusOK, map[string]any{"messages": ms, "more": more}, err
}

func (s *Server) apiSend(q *apiRequest) (int, any, error) {
	var in struct {
		Conv   string          `json:"conv"`
		To     string          `json:"to"`
		CMID   string          `json:"cmid"`
		Body   string          `json:"body"`
		Meta   json.RawMessage `json:"meta"`
		System bool            `json:"system"`
		actorBody
	}
	a, err := q.decodeActor(&in)
	if err != nil {
		return 0, nil, err
	}
	meta, perr := protocol.Meta(in.Meta)
	if perr != nil {
		return 0, nil, perr
	}
	if !in.System && a.User == "" {
		return 0, nil, protocol.Errorf(protocol.CodeInvalid, "service tokens send as a user (as) or as the system (system: true)")
	}
	ack, err := s.hub.Send(q.ctx, a, hub.SendRequest{Conv: in.Conv, To: in.To, CMID: in.CMID, Body: in.Body, Meta: meta, System: in.System})
	status := http.StatusCreated
	if ack.Duplicate {
		status = http.StatusOK
	}
	return status, ack, err
}

func (s *Server) apiPublish(q *apiRequest) (int, any, error) {
	topic := q.r.PathValue("topic")
	if err := validTopic(topic); err != nil {
		return 0, nil, err
	}
	if !q.claims.Service && !q.claims.CanPublish(topic) {
		return 0, nil, protocol.Errorf(protocol.CodeForbidden, "token does not allow this topic")
	}
	var in struct {
		Data json.RawMessage `json:"data"`
	}
	if err := q.decode(&in); err != nil {
		return 0, nil, err
	}
	if len(in.Data) == 0 {
		return 0, nil, protocol.Errorf(protocol.CodeInvalid, "data is required")
	}
	b := protocol.Compact(in.Data)
	a := hub.Actor{User: q.claims.User()}
	if q.claims.Service {
		a = hub.Actor{Service: true}
	}
	return http.StatusAccepted, nil, s.hub.Publish(a, topic, b)
}

func (s *Server) apiPresence(q *apiRequest) (int, any, error) {
	raw := q.r.URL.Query().Get("users")
	if raw == "" {
		return 0, nil, protocol.Errorf(protocol.CodeInvalid, "users is required")
	}
	ps, err := s.hub.Presence(strings.Split(raw, ","))
	return http.StatusOK, map[string]any{"presence": ps}, err
}

// devToken mints a dev-mode token for the demo page. Only routed with
// DevTokens (no production keys configured).
func (s *Server) devToken(w http.ResponseWriter, r *http.Request) {
	var in struct {
		User   string `json:"user"`
		Device string `json:"device"`
	}
	body, err := readLimited(w, r, 4096)
	if err != nil {
		writeHTTPError(w, http.StatusRequestEntityTooLarge, protocol.Errorf(protocol.CodeTooLarge, "body too large"))
		return
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeHTTPError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeBadFrame, "malformed JSON body"))
		return
	}
	if auth.ValidID(in.User) != nil || (in.Device != "" && auth.ValidID(in.Device) != nil) {
		writeHTTPError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalid, "user and device must be 1-64 characters of A-Z a-z 0-9 . _ @ + -"))
		return
	}
	now := s.cfg.Now()
	c := auth.Claims{Device: in.Device}
	c.Subject = in.User
	c.Topics.Pub = []string{"demo.>", "user.{sub}.>"}
	c.Topics.Sub = []string{"demo.>", "user.>"}
	const ttl = 12 * time.Hour
	tok, err := auth.Mint(s.cfg.DevKey, c, ttl, now)
	if err != nil {
		writeHTTPError(w, http.StatusInternalServerError, protocol.Errorf(protocol.CodeInternal, "mint failed"))
		return
	}
	s.log.Warn("dev token minted (dev mode: not for production)", "user", in.User, "device", in.Device)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "exp": now.Add(ttl).Unix()})
}

// deviceBody is PUT /v1/devices/{device}'s body: the push registration,
// and "as" for service tokens.
type deviceBody struct {
	actorBody
	protocol.DevicePush
}

// deviceActor resolves the user whose device the request names: a user
// token's own, or "as" for a service token.
func (q *apiRequest) deviceActor(as string) (hub.Actor, error) {
	a, err := q.actor(as)
	if err != nil {
		return a, err
	}
	if a.User == "" {
		return a, protocol.Errorf(protocol.CodeInvalid, "devices belong to a user: give as")
	}
	a.Device = q.r.PathValue("device")
	return a, nil
}

func (s *Server) apiPutDevice(q *apiRequest) (int, any, error) {
	var b deviceBody
	if err := q.decode(&b); err != nil {
		return 0, nil, err
	}
	a, err := q.deviceActor(b.As)
	if err != nil {
		return 0, nil, err
	}
	if err := s.hub.PutDevice(q.ctx, a, b.DevicePush); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) apiRemoveDevice(q *apiRequest) (int, any, error) {
	a, err := q.deviceActor("")
	if err != nil {
		return 0, nil, err
	}
	if err := s.hub.RemoveDevice(q.ctx, a.User, a.Device); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) apiDevices(q *apiRequest) (int, any, error) {
	a, err := q.actor("")
	if err != nil {
		return 0, nil, err
	}
	if a.User == "" {
		return 0, nil, protocol.Errorf(protocol.CodeInvalid, "devices belong to a user: give as")
	}
	ds, err := s.hub.Devices(q.ctx, a.User)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"devices": ds}, nil
}
