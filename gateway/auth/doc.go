// Package auth owns client authentication for the gateway: verifying the
// JWTs that websocket and HTTP clients present, the claims they carry, the
// topic-permission patterns inside those claims, and the development signing
// key that `parley serve` creates on a fresh machine.
//
// What it owns:
//   - [Verifier]: signature, algorithm and claim checks for one deployment's
//     key material (a dev HMAC key, PEM public keys, and/or a JWKS URL).
//   - [Claims]: the token payload and the questions callers ask of it
//     ([Claims.CanPublish], [Claims.CanSubscribe], [Claims.HasRole]).
//   - Name rules shared by the whole server: [ValidID] for user and device
//     ids, [ValidTopic] for live-topic names, [ValidPattern] and [Match] for
//     topic patterns.
//   - Minting ([Mint], [MintWith]) for `parley token` and tests.
//
// What it must not do: it holds no sessions, no connections and no per-user
// state; it never decides conversation membership (the hub does); it never
// logs a token or a key; it starts no goroutines, so a [Verifier] needs no
// Close. Every decision is made from the token and the configured keys alone,
// never from what the client says about itself.
//
// Errors from [Verifier.Verify] are one of three sentinels, [ErrMissing],
// [ErrExpired] and [ErrInvalid], tested with errors.Is; the detail after the
// sentinel is for logs, not for clients.
package auth
