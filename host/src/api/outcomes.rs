//! The outcome API: `POST /v1/conversations/{id}/stage`, `POST /v1/conversions`,
//! `GET /v1/conversions/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::lookup;
use crate::app::App;
use crate::event::{Handle, HandleKind};
use crate::http_error::ApiError;
use crate::outcome::conversion::{self, Candidate, ConversionInput, Subject};
use crate::outcome::rules::{Change, RuleError};
use crate::pipeline::outcomes::OutcomeError;
use crate::store::ContextStore;

type JsonBody = Result<Json<Value>, axum::extract::rejection::JsonRejection>;

fn body(body: JsonBody) -> Result<Value, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", error.body_text()))
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_field",
        format!("`{field}` {reason}"),
    )
}

fn disabled(app: &App) -> Result<(), ApiError> {
    if app.pipeline.tracks_outcomes() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "outcomes_disabled",
            "outcome tracking is off ([outcomes] enabled = false)",
        ))
    }
}

fn outcome_error(error: OutcomeError) -> ApiError {
    match error {
        OutcomeError::Rule(RuleError::Final(..)) => {
            ApiError::new(StatusCode::CONFLICT, "final_stage", error.to_string())
        }
        // The rule's message names the field (`stage` or `reason`).
        OutcomeError::Rule(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", error.to_string())
        }
        OutcomeError::NotFound(id) => {
            ApiError::not_found("conversation", format!("no conversation `{id}`"))
        }
        OutcomeError::Pipeline(error) => ApiError::unavailable("unavailable", error.to_string()),
    }
}

/// A stage change, as the API's body and the console's form give it.
#[derive(Debug, Clone, Copy)]
pub struct StageChange<'a> {
    /// The stage to move to.
    pub stage: &'a str,
    /// Why (required by `lost`).
    pub reason: Option<&'a str>,
    /// Who moved it (a CRM, an agent).
    pub by: Option<&'a str>,
    /// Reopen a conversation in a final stage.
    pub reopen: bool,
}

/// Longest `stage` and `reason`, in bytes.
const MAX_STAGE_BYTES: usize = 40;
/// Longest `by`, in bytes.
const MAX_BY_BYTES: usize = 200;

/// `POST /v1/conversations/{id}/stage` `{"stage": "lost", "reason": "price", "by": "crm",
/// "reopen": false}`: move the conversation to a stage.
pub async fn stage(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    request: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let request = body(request)?;
    let object = request
        .as_object()
        .ok_or_else(|| invalid("body", "must be a JSON object"))?;
    if let Some(unknown) = object
        .keys()
        .find(|key| !["stage", "reason", "by", "reopen"].contains(&key.as_str()))
    {
        return Err(invalid(unknown, "is not a field of a stage change"));
    }
    let text = |field: &str| -> Result<Option<&str>, ApiError> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.as_str())),
            Some(_) => Err(invalid(field, "must be a string")),
        }
    };
    let reopen = match object.get("reopen") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(reopen)) => *reopen,
        Some(_) => return Err(invalid("reopen", "must be true or false")),
    };
    let change = StageChange {
        stage: text("stage")?.ok_or_else(|| invalid("stage", "is required"))?,
        reason: text("reason")?,
        by: text("by")?,
        reopen,
    };
    change_stage(&app, &id, change).await.map(Json)
}

/// Move conversation `id` to a stage (the rules of `[outcomes]` apply) and publish
/// `conversation.stage_changed`: what the API and the console both call. Answers the
/// stage the conversation is in afterwards.
pub async fn change_stage(app: &App, id: &str, change: StageChange<'_>) -> Result<Value, ApiError> {
    disabled(app)?;
    for (field, value, max) in [
        ("stage", Some(change.stage), MAX_STAGE_BYTES),
        ("reason", change.reason, MAX_STAGE_BYTES),
        ("by", change.by, MAX_BY_BYTES),
    ] {
        if value.is_some_and(|value| value.len() > max) {
            return Err(invalid(field, format!("is over {max} bytes")));
        }
    }
    let rule = Change::Stage {
        to: change.stage,
        reason: change.reason,
        by: change.by,
        reopen: change.reopen,
    };
    let tracked = app
        .pipeline
        .track(id, &rule, None, None)
        .await
        .map_err(outcome_error)?;
    Ok(json!({
        "conversation_id": id,
        "stage": tracked.record.stage,
        "stage_at": tracked.record.stage_at,
        "lost_reason": tracked.record.lost_reason,
        "reached": tracked.record.reached,
        "changed": tracked.changed,
    }))
}

/// `GET /v1/conversions/{id}`: the answer given when it was recorded, and under
/// `destinations` what each conversion destination did with it so far.
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let outcomes = app.pipeline.store().outcomes();
    let kept = outcomes
        .conversion(&id)
        .await
        .map_err(lookup::unavailable)?
        .ok_or_else(|| ApiError::not_found("conversion", format!("no conversion `{id}`")))?;
    let mut answer = stored(&kept)?;
    let receipts = outcomes
        .receipts(&id)
        .await
        .map_err(lookup::unavailable)?
        .iter()
        .map(|receipt| stored(receipt))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(object) = answer.as_object_mut() {
        object.insert("destinations".to_owned(), Value::Array(receipts));
    }
    Ok(Json(answer))
}

fn stored(kept: &str) -> Result<Value, ApiError> {
    serde_json::from_str(kept).map_err(|error| {
        ApiError::unavailable(
            "store_unavailable",
            format!("kept conversion unreadable: {error}"),
        )
    })
}

/// `POST /v1/conversions`: record a conversion, attribute it to the contact's
/// conversation (the one open then, else the latest started within `[outcomes]
/// attribution_window`) and publish `conversion.recorded`. The same `id` again answers
/// 200 with the same body and publishes nothing.
pub async fn record(
    State(app): State<Arc<App>>,
    request: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    disabled(&app)?;
    let request = body(request)?;
    let input = conversion::parse(&request, Timestamp::now())
        .map_err(|error| invalid(&error.field, &error.reason))?;
    let store = app.pipeline.store();
    if let Some(kept) = store
        .outcomes()
        .conversion(&input.conversion.id)
        .await
        .map_err(lookup::unavailable)?
    {
        return Ok((StatusCode::OK, Json(stored(&kept)?)));
    }
    let (contact_id, attributed) = attribution(&app, store, &input).await?;
    let (answer, changed) = match attributed {
        Ok(conversation_id) => {
            let change = Change::Conversion(&input.conversion);
            let extra = Some((input.consent.clone(), input.properties.clone()));
            let tracked = app
                .pipeline
                .track(&conversation_id, &change, None, extra)
                .await
                .map_err(outcome_error)?;
            let attribution = &tracked.conversation.attribution;
            let answer = answer(
                &input,
                &tracked.conversation.contact_id,
                Ok(&conversation_id),
            )
            .and(json!({
                "first_touch": attribution.first_touch,
                "last_touch": attribution.last_touch,
                "stage": tracked.record.stage,
            }));
            (answer, tracked.changed)
        }
        Err(reason) => {
            app.pipeline
                .record_unattributed(&contact_id, &input, reason)
                .await
                .map_err(|error| ApiError::unavailable("unavailable", error.to_string()))?;
            (answer(&input, &contact_id, Err(reason)), true)
        }
    };
    let text = answer.to_string();
    match store
        .outcomes()
        .keep_conversion(&input.conversion.id, &text)
        .await
        .map_err(lookup::unavailable)?
    {
        Some(kept) => Ok((StatusCode::OK, Json(stored(&kept)?))),
        None if changed => Ok((StatusCode::CREATED, Json(answer))),
        None => Ok((StatusCode::OK, Json(answer))),
    }
}

trait And {
    fn and(self, more: Value) -> Value;
}

impl And for Value {
    fn and(mut self, more: Value) -> Value {
        if let (Some(object), Value::Object(more)) = (self.as_object_mut(), more) {
            object.extend(more);
        }
        self
    }
}

fn answer(input: &ConversionInput, contact_id: &str, attributed: Result<&str, &str>) -> Value {
    let conversion = &input.conversion;
    let mut answer = json!({
        "id": conversion.id,
        "name": conversion.name,
        "value": conversion.value.map(|value| value.to_string()),
        "currency": conversion.currency,
        "occurred_at": conversion.occurred_at,
        "contact_id": contact_id,
        "attributed": attributed.is_ok(),
        "conversation_id": attributed.ok(),
        "first_touch": null,
        "last_touch": null,
    });
    if let (Err(reason), Some(object)) = (attributed, answer.as_object_mut()) {
        object.insert("reason".into(), Value::String(reason.to_owned()));
    }
    answer
}

/// The contact a conversion names and the conversation it is attributed to (or why not).
async fn attribution(
    app: &App,
    store: &Arc<dyn ContextStore>,
    input: &ConversionInput,
) -> Result<(String, Result<String, &'static str>), ApiError> {
    if let Subject::Conversation(id) = &input.subject {
        let conversation = lookup::conversation(store, id).await?;
        return Ok((conversation.contact_id, Ok(conversation.id)));
    }
    let contact_id = contact_of(app, store, &input.subject).await?;
    let details = store
        .contact_details(&contact_id)
        .await
        .map_err(lookup::unavailable)?
        .ok_or_else(|| ApiError::not_found("contact", format!("no contact `{contact_id}`")))?;
    let conversations = futures::future::try_join_all(
        details
            .conversations
            .iter()
            .map(|id| store.conversation(id)),
    )
    .await
    .map_err(lookup::unavailable)?;
    let candidates: Vec<Candidate> = conversations
        .into_iter()
        .flatten()
        .map(|conversation| Candidate {
            open: conversation.status == crate::event::ConversationStatus::Open,
            id: conversation.id,
            started_at: conversation.started_at,
            last_activity_at: conversation.last_activity_at,
        })
        .collect();
    let settings = app.pipeline.outcome_settings();
    let chosen = conversion::attribute(
        &candidates,
        input.conversion.occurred_at,
        settings.attribution_window,
        app.pipeline.inactivity(),
    )
    .map(|candidate| candidate.id.clone());
    Ok((contact_id, chosen))
}

/// The live contact a subject names (following merges to the survivor), or 404.
async fn contact_of(
    app: &App,
    store: &Arc<dyn ContextStore>,
    subject: &Subject,
) -> Result<String, ApiError> {
    let handle = |kind, value: String| Handle {
        kind,
        value,
        verified: true,
    };
    let (field, found) = match subject {
        Subject::Contact(id) => ("contact.id", Some(id.clone())),
        Subject::Phone(phone) => {
            let normalized = app.pipeline.normalizer().phone(phone).ok_or_else(|| {
                invalid("contact.phone", format!("`{phone}` is not a phone number"))
            })?;
            let owner = store
                .outcomes()
                .contact_by_handle(&handle(HandleKind::Phone, normalized))
                .await
                .map_err(lookup::unavailable)?;
            ("contact.phone", owner)
        }
        Subject::Email(email) => {
            let owner = store
                .outcomes()
                .contact_by_handle(&handle(HandleKind::Email, email.clone()))
                .await
                .map_err(lookup::unavailable)?;
            ("contact.email", owner)
        }
        Subject::ChannelUser { channel, user } => {
            let owner = store
                .outcomes()
                .contact_by_handle(&crate::pipeline::Normalizer::channel_user(channel, user))
                .await
                .map_err(lookup::unavailable)?;
            ("contact.user", owner)
        }
        Subject::Conversation(_) => ("conversation_id", None),
    };
    let mut id = found
        .ok_or_else(|| ApiError::not_found("contact", format!("no contact with that `{field}`")))?;
    // A merged contact's conversions belong to the contact it was merged into.
    for _ in 0..8 {
        let details = store
            .contact_details(&id)
            .await
            .map_err(lookup::unavailable)?
            .ok_or_else(|| ApiError::not_found("contact", format!("no contact `{id}`")))?;
        match details.merged_into {
            Some(survivor) => id = survivor,
            None => return Ok(id),
        }
    }
    Ok(id)
}
