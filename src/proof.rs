//! The proof a token needs on each request: none for a bearer token; for a
//! DPoP-bound one (RFC 9449), a `DPoP` header signed by its key (feature
//! `dpop`). Without the feature, [`Proofs`] has no value at all, and every
//! `Option<Proofs>` is `None` at no cost.

use http::{HeaderMap, Uri};

use crate::{Error, Token, TokenType};

/// How to prove a DPoP-bound token: its key, and its `ath` hashed once.
#[cfg(feature = "dpop")]
#[derive(Clone)]
pub(crate) struct Proofs {
    dpop: crate::dpop::Dpop,
    ath: std::sync::Arc<str>,
}

/// Without the `dpop` feature there is nothing to prove.
#[cfg(not(feature = "dpop"))]
#[derive(Clone)]
pub(crate) enum Proofs {}

impl Proofs {
    /// The proofs `token` needs: none for a bearer token, its key's for a
    /// DPoP token. A DPoP token with no key to prove it is an error: it is
    /// never sent as `Bearer`, nor without a proof.
    pub(crate) fn of(token: &Token) -> Result<Option<Proofs>, Error> {
        if *token.token_type() != TokenType::DPoP {
            return Ok(None);
        }
        #[cfg(feature = "dpop")]
        if let Some(dpop) = token.dpop() {
            return Ok(Some(Proofs {
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
        #[cfg(feature = "dpop")]
        {
            let uri = req.uri().clone();
            let proof = self.dpop.proof_with_ath(req.method(), &uri, &self.ath)?;
            req.headers_mut().insert(crate::dpop::DPOP, proof);
            Ok(uri)
        }
        #[cfg(not(feature = "dpop"))]
        {
            let _ = req;
            match *self {}
        }
    }

    /// Keeps the `DPoP-Nonce` of a response from `uri`'s origin, if any.
    pub(crate) fn observe(&self, uri: &Uri, headers: &HeaderMap) {
        #[cfg(feature = "dpop")]
        {
            self.dpop.observe(uri, headers);
        }
        #[cfg(not(feature = "dpop"))]
        {
            let _ = (uri, headers);
            match *self {}
        }
    }
}
