//! Sign-in, sign-out, and the extractors that admit a request: [`Signed`] (a valid
//! session) and [`Action`] (a valid session, a same-origin request and the session's CSRF
//! token in the form).

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, Form, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{COOKIE, Session, Sessions};
use super::views::{ConsoleError, render};
use crate::app::App;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn sessions(app: &App) -> Result<&Sessions, ConsoleError> {
    app.console
        .as_deref()
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, "the console is disabled"))
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A request with a valid console session.
pub struct Signed(pub Session);

impl FromRequestParts<Arc<App>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let sessions = sessions(app).map_err(IntoResponse::into_response)?;
        let verified =
            cookie(&parts.headers, COOKIE).and_then(|value| sessions.verify(value, now()));
        let verified = match verified {
            Some(session) => signed_out_elsewhere(app, session)
                .await
                .map_err(IntoResponse::into_response)?,
            None => None,
        };
        match verified {
            Some(session) => Ok(Signed(session)),
            // A page asked for without a session goes to the sign-in form; anything else
            // (an action, the event stream) is refused outright.
            None if parts.method == Method::GET && !parts.uri.path().ends_with("/events") => {
                Err(Redirect::to("/console/sign-in").into_response())
            }
            None => Err(ConsoleError::new(
                StatusCode::UNAUTHORIZED,
                "not signed in to the console (or the session expired)",
            )
            .into_response()),
        }
    }
}

/// `session`, unless it was signed out on any instance sharing the store (`None`).
async fn signed_out_elsewhere(
    app: &App,
    session: Session,
) -> Result<Option<Session>, ConsoleError> {
    match app.pipeline.store().session_revoked(&session.id).await {
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some(session)),
        // Unchecked is refused: a signed-out session must not come back while the store
        // is down.
        Err(error) => Err(ConsoleError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the console session cannot be checked (the store did not answer: {error}); retry shortly"
            ),
        )),
    }
}

/// Refuses a request another site made the browser send: `Sec-Fetch-Site` other than
/// same-origin, or an `Origin` whose host is not this request's `Host`.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ConsoleError> {
    let refused = || ConsoleError::new(StatusCode::FORBIDDEN, "cross-site request refused");
    let text = |name| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refused());
    }
    if let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) {
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        if origin_host != Some(host) {
            return Err(refused());
        }
    }
    Ok(())
}

/// A form that carries the session's CSRF token.
pub trait WithCsrf {
    /// The token the form carried (empty when it carried none).
    fn csrf(&self) -> &str;
}

/// An action: a signed-in, same-origin request whose form `T` carries the session's CSRF
/// token.
pub struct Action<T>(pub Session, pub T);

impl<T> FromRequest<Arc<App>> for Action<T>
where
    T: WithCsrf + serde::de::DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Signed(session) = Signed::from_request_parts(&mut parts, app).await?;
        same_origin(&parts.headers).map_err(IntoResponse::into_response)?;
        let request = Request::from_parts(parts, body);
        let Form(form) = Form::<T>::from_request(request, app)
            .await
            .map_err(|error| {
                ConsoleError::new(StatusCode::BAD_REQUEST, error.body_text()).into_response()
            })?;
        csrf(&session, form.csrf()).map_err(IntoResponse::into_response)?;
        Ok(Action(session, form))
    }
}

/// Refuses a token that is not `session`'s CSRF token.
pub fn csrf(session: &Session, presented: &str) -> Result<(), ConsoleError> {
    if session.csrf_matches(presented) {
        Ok(())
    } else {
        Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or not this session's: reload the page",
        ))
    }
}

/// `GET /console`: the funnel when signed in, else the sign-in form.
pub async fn home(session: Result<Signed, Response>) -> Response {
    match session {
        Ok(_) => Redirect::to("/console/funnel").into_response(),
        Err(_) => Redirect::to("/console/sign-in").into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage<'a> {
    problem: Option<&'a str>,
}

/// `GET /console/sign-in`: the form (the key goes in a POST body, never in a URL).
pub async fn sign_in_page(State(app): State<Arc<App>>) -> Result<Response, ConsoleError> {
    sessions(&app)?;
    Ok(render(StatusCode::OK, &SignInPage { problem: None }))
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct SignInForm {
    key: String,
}

/// `POST /console/sign-in`: a console key opens a session (an HttpOnly, SameSite=Strict
/// cookie, Secure when the console is reached over https, expiring with the session).
/// Each client address may try `[console] sign_in_attempts` keys per `sign_in_window`;
/// more answer `429` with `Retry-After`.
pub async fn sign_in(
    State(app): State<Arc<App>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    let sessions = sessions(&app)?;
    same_origin(&headers)?;
    let peer = peer.map(|Extension(ConnectInfo(address))| address.ip());
    // A request with no address at all (not from a socket) is not limited.
    if let Some(client) = app.public_url.client(peer, &headers)
        && let Err(wait) = sessions.admit_sign_in(client)
    {
        return Ok(too_many(wait));
    }
    let Some((value, _)) = sessions.sign_in(form.key.trim(), now()) else {
        return Ok(render(
            StatusCode::UNAUTHORIZED,
            &SignInPage {
                problem: Some("That is not a console key ([console] keys)."),
            },
        ));
    };
    let secure = app
        .public_url
        .of(&uri, &headers)
        .is_some_and(|url| url.starts_with("https://"));
    let cookie = format!(
        "{COOKIE}={value}; Path=/console; Max-Age={}; HttpOnly; SameSite=Strict{}",
        sessions.ttl().as_secs(),
        if secure { "; Secure" } else { "" }
    );
    set_cookie(Redirect::to("/console/funnel").into_response(), &cookie)
}

/// `429`: the client address is out of sign-in attempts, and when to try again.
fn too_many(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let problem = format!(
        "Too many sign-in attempts from your address ([console] sign_in_attempts): try again in {seconds} s."
    );
    let mut response = render(
        StatusCode::TOO_MANY_REQUESTS,
        &SignInPage {
            problem: Some(&problem),
        },
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The sign-out form.
#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

impl WithCsrf for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /console/sign-out`: ends the session on every instance sharing the store (a
/// revocation record lives as long as the session would have) and clears its cookie.
pub async fn sign_out(
    State(app): State<Arc<App>>,
    Action(session, _): Action<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    let now = now();
    // This instance refuses it at once, whatever the store says.
    sessions(&app)?.sign_out(&session, now);
    let left =
        std::time::Duration::from_secs(session.expires.saturating_sub(now).max(1).unsigned_abs());
    if let Err(error) = app.pipeline.store().revoke_session(&session.id, left).await {
        // The cookie is cleared all the same; only a copy taken before sign-out could
        // still open another instance, until the session expires.
        tracing::error!(%error, "console sign-out not recorded in the store: other instances accept the session until it expires");
    }
    let cookie = format!("{COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict");
    set_cookie(Redirect::to("/console/sign-in").into_response(), &cookie)
}

fn set_cookie(mut response: Response, cookie: &str) -> Result<Response, ConsoleError> {
    let value = HeaderValue::from_str(cookie).map_err(|_| {
        ConsoleError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the session cookie is not a header value",
        )
    })?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}
