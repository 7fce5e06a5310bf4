//! The `auth`-frame handshake of a WebSocket client that connected
//! without `?token=`: its first frame must be `auth`, within
//! `--auth-timeout`.

use axum::extract::ws::{Message, WebSocket};
use tokio::time::{Instant, sleep_until, timeout};

use super::conn::{read_error_reason, text};
use crate::{
    auth::Credentials,
    client,
    protocol::{CloseReason, FrameError, Positions},
    state::AppState,
};

/// Waits for the `auth` frame: the credentials and where the client says
/// it was. On refusal the `error` frame has been sent and the reason to
/// close with is returned.
pub(super) async fn authenticate(
    socket: &mut WebSocket,
    state: &AppState,
) -> Result<(Credentials, Positions), CloseReason> {
    let deadline = Instant::now() + state.cfg.auth_timeout;
    let unauthorized = |e: FrameError| (e, CloseReason::Unauthorized);
    let (error, reason) = loop {
        let msg = tokio::select! {
            () = state.shutdown.token().cancelled() => return Err(CloseReason::shutdown()),
            () = sleep_until(deadline) => break unauthorized(client::auth_timeout(state.cfg.auth_timeout)),
            msg = socket.recv() => msg,
        };
        match msg {
            None => return Err(CloseReason::Unauthorized),
            Some(Err(e)) => match read_error_reason(&e) {
                Some(CloseReason::MessageTooBig) => {
                    break (client::too_big(), CloseReason::MessageTooBig);
                }
                Some(reason) => break (client::malformed(), reason),
                None => return Err(CloseReason::Unauthorized),
            },
            Some(Ok(Message::Text(t))) if t.len() > state.cfg.max_frame as usize => {
                break (client::too_big(), CloseReason::MessageTooBig);
            }
            Some(Ok(Message::Text(t))) => {
                match client::authenticate(&state.auth, &t, state.cfg.max_json_depth) {
                    Ok(authenticated) => return Ok(authenticated),
                    Err(e) => break unauthorized(e),
                }
            }
            Some(Ok(Message::Binary(_))) => break unauthorized(client::binary()),
            Some(Ok(Message::Close(_))) => return Err(CloseReason::Unauthorized),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
        }
    };
    let _ = timeout(state.cfg.write_timeout, socket.send(text(error.frame()))).await;
    Err(reason)
}
