//! The proof a token needs on each request: none for a bearer token; for a
//! DPoP-bound one (RFC 9449), a `DPoP` header signed by its key (feature
//! `dpop`); and for a token exchange's `N_A` token (RFC 8693 §2.2.1, not an
//! access token), one that never comes: such a token is never sent. A
//! bearer token's `Option<Proofs>` is `None`, and the per-request path
//! looks no further.

use http::{HeaderMap, Uri};

use crate::{Error, Token, TokenType};

/// What a token that is not a plain bearer token needs on each request.
#[derive(Clone)]
pub(crate) enum Proofs {
    /// A DPoP-bound token: its key, and its `ath` hashed once.
    #[cfg(feature = "dpop")]
    Dpop {
        dpop: crate::dpop::Dpop,
        ath: std::sync::Arc<str>,
    },
    /// A token exchange's `N_A` token: not an access token, never sent in
    /// a header (for [`TokenCache::token`](crate::TokenCache::token) users).
    NotAnAccessToken,
}

/// Why an `N_A` token is not sent.
pub(crate) fn not_an_access_token() -> Error {
    Error::unsendable(
        "the token is of type N_A (RFC 8693): not an access token, and never sent in an \
         Authorization header; read it with TokenCache::token",
    )
}

impl Proofs {
    /// The proofs `token` needs: none for a bearer token, its key's for a
    /// DPoP token. A DPoP token with no key to prove it is an error: it is
    /// never sent as `Bearer`, nor without a proof.
    pub(crate) fn of(token: &Token) -> Result<Option<Proofs>, Error> {
        match token.token_type() {
            TokenType::Bearer => return Ok(None),
            TokenType::DPoP => {}
            TokenType::Other(other) if other == crate::oauth::NOT_APPLICABLE => {
                return Ok(Some(Proofs::NotAnAccessToken));
            }
            TokenType::Other(_) => return Ok(None),
        }
        #[cfg(feature = "dpop")]
        if let Some(dpop) = token.dpop() {
            return Ok(Some(Proofs::Dpop {
                dpop: dpop.clone(),
                ath: crate::dpop::ath(token.access_token().secret()).into(),
            }));
        }
        Err(Error::invalid_response(
            "a DPoP-bound token, and no DPoP key to prove it with (it is never sent as Bearer)",
        ))
    }

    /// Puts a new proof for `req` (its method and URI) into its headers,
    /// replacing any; returns the URI, whose origin the response's
    /// `DPoP-Nonce` is for.
    pub(crate) fn prove<B>(&self, req: &mut http::Request<B>) -> Result<Uri, Error> {
        match self {
            #[cfg(feature = "dpop")]
            Proofs::Dpop { dpop, ath } => {
                let uri = req.uri().clone();
                let proof = dpop.proof_with_ath(req.method(), &uri, ath)?;
                req.headers_mut().insert(crate::dpop::DPOP, proof);
                Ok(uri)
            }
            Proofs::NotAnAccessToken => {
                let _ = req;
                Err(not_an_access_token())
            }
        }
    }

    /// Keeps the `DPoP-Nonce` of a response from `uri`'s origin, if any.
    pub(crate) fn observe(&self, uri: &Uri, headers: &HeaderMap) {
        match self {
            #[cfg(feature = "dpop")]
            Proofs::Dpop { dpop, .. } => {
                dpop.observe(uri, headers);
            }
            Proofs::NotAnAccessToken => {
                let _ = (uri, headers);
            }
        }
    }
}
