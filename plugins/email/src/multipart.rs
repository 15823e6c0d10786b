//! Form bodies: `multipart/form-data` (SendGrid Inbound Parse, Mailgun routes with
//! attachments) through `multer`, and `application/x-www-form-urlencoded` (Mailgun without
//! attachments) through the SDK's form decoder.

use omnigate_sdk::{HttpRequest, WebhookError, form, header};

/// One field of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// The file name, for file fields.
    pub filename: Option<String>,
    /// The part's content type, if given.
    pub content_type: Option<String>,
    /// The value (text fields) or the file's bytes.
    pub data: Vec<u8>,
}

impl Field {
    /// The value as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// The fields of a form, in order.
#[derive(Debug, Default)]
pub struct Form(pub Vec<Field>);

impl Form {
    /// The first non-empty text value of `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|field| field.name == name && field.filename.is_none())
            .map(Field::text)
            .filter(|value| !value.trim().is_empty())
    }

    /// The first value of `name`, or a `BadRequest` naming it.
    pub fn require(&self, name: &str) -> Result<String, WebhookError> {
        self.get(name)
            .ok_or_else(|| WebhookError::BadRequest(format!("missing form field `{name}`")))
    }

    /// The file field called `name`.
    pub fn file(&self, name: &str) -> Option<&Field> {
        self.0
            .iter()
            .find(|field| field.name == name && field.filename.is_some())
    }
}

/// Reads the body of `request` as a form, by its `content-type`.
pub fn read(request: &HttpRequest) -> Result<Form, WebhookError> {
    let content_type = header(request, "content-type").unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "multipart/form-data" => multipart(content_type, &request.body),
        "application/x-www-form-urlencoded" => Ok(Form(
            form(&request.body)
                .into_iter()
                .map(|(name, value)| Field {
                    name,
                    filename: None,
                    content_type: None,
                    data: value.into_bytes(),
                })
                .collect(),
        )),
        other => Err(WebhookError::BadRequest(format!(
            "content-type {other:?} is not a form (multipart/form-data or application/x-www-form-urlencoded)"
        ))),
    }
}

fn multipart(content_type: &str, body: &[u8]) -> Result<Form, WebhookError> {
    let boundary = multer::parse_boundary(content_type).map_err(|error| {
        WebhookError::BadRequest(format!("multipart body without a usable boundary: {error}"))
    })?;
    let bytes = bytes::Bytes::copy_from_slice(body);
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
    let mut parts = multer::Multipart::new(stream, boundary);
    // The whole body is in memory: every future completes without waiting.
    futures::executor::block_on(async move {
        let mut fields = Vec::new();
        while let Some(field) = parts.next_field().await.map_err(malformed)? {
            let name = field.name().unwrap_or_default().to_owned();
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(|mime| mime.to_string());
            let data = field.bytes().await.map_err(malformed)?.to_vec();
            fields.push(Field {
                name,
                filename,
                content_type,
                data,
            });
        }
        Ok(Form(fields))
    })
}

fn malformed(error: multer::Error) -> WebhookError {
    WebhookError::BadRequest(format!("malformed multipart body: {error}"))
}
