//! [`TokenParams`]: what a request needs of its token beyond what its
//! cache asks for: a scope, an audience, resource indicators, a claims
//! request.

use std::collections::BTreeSet;
use std::fmt;

/// What a request needs of its token beyond what its cache's source asks
/// for by default: a scope, an audience, resource indicators (RFC 8707), a
/// claims request (OpenID Connect Core §5.5, as an Azure continuous access
/// evaluation challenge demands).
///
/// Put one in a request's extensions and [`AuthService`](crate::AuthService)
/// attaches a token made for it: each distinct set of parameters gets a
/// cache of its own ([`TokenCache::variant`](crate::TokenCache::variant)),
/// with its own single flight and its own refresh token. The rejection
/// rules make one too: a step-up to more scope, a claims challenge (see
/// [`reject`](crate::reject)).
///
/// The scope is a set: `"b a"` and `"a b a"` are the same parameters, and
/// [`with_scope_added`](Self::with_scope_added) takes the union.
///
/// # Example
///
/// ```
/// use tower_bearer::TokenParams;
///
/// let params = TokenParams::new().scope("api:read").resource("https://billing.example/");
/// let mut request = http::Request::get("https://billing.example/v1/invoices").body(())?;
/// request.extensions_mut().insert(params.clone());
///
/// let more = params.with_scope_added("api:write api:read");
/// assert_eq!(more.scope_str().as_deref(), Some("api:read api:write"));
/// # Ok::<_, http::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenParams {
    /// The scope instead of the source's own.
    scope: Option<BTreeSet<String>>,
    /// Scope added to the source's own (when `scope` is `None`).
    added: BTreeSet<String>,
    audience: Option<String>,
    resources: Vec<String>,
    claims: Option<String>,
}

impl TokenParams {
    /// No parameters: the cache's own token.
    pub fn new() -> Self {
        TokenParams::default()
    }

    /// The scope to ask for instead of the source's own (space-separated).
    /// Replaces scope added before.
    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = Some(scope.split_whitespace().map(str::to_owned).collect());
        self.added.clear();
        self
    }

    /// The `audience` to ask for.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// A `resource` indicator to ask for (RFC 8707); repeatable.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        let resource = resource.into();
        if !self.resources.contains(&resource) {
            self.resources.push(resource);
            self.resources.sort();
        }
        self
    }

    /// The `claims` request parameter (a JSON object, as a claims challenge
    /// gives it once decoded).
    pub fn claims(mut self, claims: impl Into<String>) -> Self {
        self.claims = Some(claims.into());
        self
    }

    /// These parameters with `scope` added to their scope: the union of
    /// their own scope and `scope` when they set one, else the union of the
    /// source's scope and `scope` (as a step-up asks: see
    /// [`scope_for`](Self::scope_for)).
    pub fn with_scope_added(&self, scope: &str) -> Self {
        let mut params = self.clone();
        let words = scope.split_whitespace().map(str::to_owned);
        match &mut params.scope {
            Some(own) => own.extend(words),
            None => params.added.extend(words),
        }
        params
    }

    /// The scope set with [`scope`](Self::scope), space-separated in a
    /// stable order, if one is set.
    pub fn scope_str(&self) -> Option<String> {
        self.scope.as_ref().map(join)
    }

    /// The scope to ask for, given the source's own (`configured`): this
    /// scope if set, else `configured`; either way with the added scope.
    /// `None` when there is none of these.
    ///
    /// ```
    /// use tower_bearer::TokenParams;
    ///
    /// let step_up = TokenParams::new().with_scope_added("write");
    /// assert_eq!(step_up.scope_for(Some("read")).as_deref(), Some("read write"));
    /// assert_eq!(step_up.scope_for(None).as_deref(), Some("write"));
    /// let replaced = TokenParams::new().scope("admin").with_scope_added("write");
    /// assert_eq!(replaced.scope_for(Some("read")).as_deref(), Some("admin write"));
    /// assert_eq!(TokenParams::new().scope_for(Some("b a")).as_deref(), Some("b a"));
    /// ```
    pub fn scope_for(&self, configured: Option<&str>) -> Option<String> {
        match (&self.scope, configured) {
            (Some(own), _) => Some(join(own)),
            (None, configured) if self.added.is_empty() => configured.map(str::to_owned),
            (None, configured) => {
                let mut scope: BTreeSet<String> = configured
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                scope.extend(self.added.iter().cloned());
                Some(join(&scope))
            }
        }
    }

    /// The audience, if set.
    pub fn audience_str(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// The resource indicators, sorted.
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The claims request, if set.
    pub fn claims_str(&self) -> Option<&str> {
        self.claims.as_deref()
    }

    /// These parameters as parts of a store key: every member tagged and
    /// counted, so that no two different sets give the same parts.
    pub(crate) fn key_parts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        let mut set = |tag: &str, items: Option<Vec<&String>>| {
            parts.push(tag.to_owned());
            match items {
                None => parts.push("-".to_owned()),
                Some(items) => {
                    parts.push(items.len().to_string());
                    parts.extend(items.into_iter().cloned());
                }
            }
        };
        set("scope", self.scope.as_ref().map(|s| s.iter().collect()));
        set("added", Some(self.added.iter().collect()));
        set("audience", self.audience.as_ref().map(|a| vec![a]));
        set("resources", Some(self.resources.iter().collect()));
        set("claims", self.claims.as_ref().map(|c| vec![c]));
        parts
    }

    /// Whether no parameter is set.
    pub fn is_empty(&self) -> bool {
        self.scope.is_none()
            && self.added.is_empty()
            && self.audience.is_none()
            && self.resources.is_empty()
            && self.claims.is_none()
    }
}

impl fmt::Debug for TokenParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TokenParams");
        if let Some(scope) = self.scope_str() {
            d.field("scope", &scope);
        }
        if !self.added.is_empty() {
            d.field("added_scope", &join(&self.added));
        }
        if let Some(audience) = &self.audience {
            d.field("audience", audience);
        }
        if !self.resources.is_empty() {
            d.field("resources", &self.resources);
        }
        if self.claims.is_some() {
            d.field("claims", &"…");
        }
        d.finish()
    }
}

fn join(scope: &BTreeSet<String>) -> String {
    scope
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_sets_and_resources_are_sorted() {
        let a = TokenParams::new()
            .scope("b a a")
            .resource("y")
            .resource("x");
        let b = TokenParams::new()
            .scope("a b")
            .resource("x")
            .resource("y")
            .resource("x");
        assert_eq!(a, b);
        assert_eq!(a.scope_str().as_deref(), Some("a b"));
        assert_eq!(a.resources(), ["x", "y"]);
        assert!(TokenParams::new().is_empty());
        assert!(
            !TokenParams::new().scope("").is_empty(),
            "an empty scope is a scope"
        );
        assert_ne!(TokenParams::new().scope(""), TokenParams::new());
    }
}
