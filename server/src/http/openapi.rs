//! `GET /openapi.json`: the API's OpenAPI 3.1 document, built from the route table that
//! also registers the handlers ([`super::routes!`]) and from the request types themselves
//! (their `schemars` schemas, derived beside their `Deserialize`), so a route or a field
//! cannot change without the document changing with it.
//!
//! Response bodies are described by their top-level shape (the keys a client relies on),
//! written here: most are built as JSON by their handlers rather than typed.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

/// One operation of the API, as the document describes it.
pub(super) struct Op {
    pub method: &'static str,
    /// The actix pattern, which is also OpenAPI's path template (`/v1/answers/{id}`).
    pub path: &'static str,
    summary: &'static str,
    body: Option<fn(&mut SchemaGenerator) -> Schema>,
    /// Query parameters: name, schema, description.
    query: Vec<(&'static str, Value, &'static str)>,
    /// The success status, its content type and its body's schema (`None`: no body).
    ok: (u16, &'static str, Option<Value>),
    /// Open to anyone even when keys are set.
    public: bool,
    /// Answers as server-sent events too, when the request asks to stream.
    streams: bool,
}

fn subschema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

impl Op {
    /// An operation answering 200 with a JSON body shaped `ok`.
    pub(super) fn json(summary: &'static str, ok: Value) -> Self {
        Self {
            method: "",
            path: "",
            summary,
            body: None,
            query: Vec::new(),
            ok: (200, "application/json", Some(ok)),
            public: false,
            streams: false,
        }
    }

    /// An operation answering 200 with a body of another content type.
    pub(super) fn content(summary: &'static str, content_type: &'static str) -> Self {
        Self {
            ok: (200, content_type, Some(json!({"type": "string"}))),
            ..Self::json(summary, Value::Null)
        }
    }

    /// An operation answering 204 with no body.
    pub(super) fn no_content(summary: &'static str) -> Self {
        Self {
            ok: (204, "", None),
            ..Self::json(summary, Value::Null)
        }
    }

    /// Takes a JSON body of type `T`.
    pub(super) fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some(subschema::<T>);
        self
    }

    /// Takes an optional query parameter.
    pub(super) fn query(mut self, name: &'static str, schema: Value, about: &'static str) -> Self {
        self.query.push((name, schema, about));
        self
    }

    /// Streams as server-sent events when asked (`"stream": true`).
    pub(super) fn streams(mut self) -> Self {
        self.streams = true;
        self
    }

    /// Needs no key.
    pub(super) fn public(mut self) -> Self {
        self.public = true;
        self
    }

    pub(super) fn at(mut self, method: &'static str, path: &'static str) -> Self {
        self.method = method;
        self.path = path;
        self
    }
}

/// A JSON object schema with `required` keys, each with its schema.
pub(super) fn object(required: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> = required
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let names: Vec<&str> = required.iter().map(|(k, _)| *k).collect();
    json!({"type": "object", "required": names, "properties": properties})
}

/// Shorthands for the schemas response shapes are made of.
pub(super) fn string() -> Value {
    json!({"type": "string"})
}
fn integer() -> Value {
    json!({"type": "integer", "minimum": 0})
}
fn number() -> Value {
    json!({"type": "number"})
}
fn boolean() -> Value {
    json!({"type": "boolean"})
}
pub(super) fn any_object() -> Value {
    json!({"type": "object"})
}
pub(super) fn array_of(items: Value) -> Value {
    json!({"type": "array", "items": items})
}
fn nullable(of: &str) -> Value {
    json!({"type": [of, "null"]})
}

/// The error body every route answers errors with.
fn error_schema() -> Value {
    object(&[(
        "error",
        object(&[
            ("message", string()),
            ("type", string()),
            ("param", nullable("string")),
            ("code", nullable("string")),
        ]),
    )])
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": string()}))
        .collect()
}

/// The document for `ops`.
pub(super) fn document(ops: &[Op]) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let mut paths = Map::new();
    for op in ops {
        let mut responses = Map::new();
        let (status, content_type, schema) = &op.ok;
        let mut ok = json!({"description": "success"});
        if let Some(schema) = schema {
            ok["content"] = json!({ *content_type: {"schema": schema} });
        }
        if op.streams {
            // Each event: `data` holds a chat.completion.chunk as JSON, or `[DONE]`.
            ok["content"]["text/event-stream"] = json!({"schema": object(&[("data", string())])});
        }
        responses.insert(status.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({
                "description": "an error: 400 bad request, 401 missing or wrong key, 404 not found, \
                                405 method not allowed (with Allow), 413 body too large, \
                                422 a JSON answer that did not fit in its token limit, \
                                429 too many answers waiting (with Retry-After), 500 server error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            }),
        );
        let mut operation = json!({
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.'], "_")),
            "summary": op.summary,
            "responses": responses,
        });
        let mut parameters = path_params(op.path);
        for (name, schema, description) in &op.query {
            parameters.push(json!({
                "name": name, "in": "query", "required": false,
                "description": description, "schema": schema,
            }));
        }
        if !parameters.is_empty() {
            operation["parameters"] = json!(parameters);
        }
        if let Some(body) = op.body {
            let schema = body(&mut generator);
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}},
            });
        }
        if op.public {
            operation["security"] = json!([]);
        }
        paths
            .entry(op.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object")
            .insert(op.method.to_owned(), operation);
    }
    let mut schemas = generator.take_definitions(true);
    schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sovrag",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A local knowledge base: search, cited answers, and an \
                            OpenAI-compatible endpoint over the documents of this machine.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "Required on every route but /healthz and / when the server has \
                                API keys; without keys any header is taken.",
            }},
        },
        "security": [{"bearer": []}],
    })
}

// The shapes of the responses, as far as clients rely on them.

pub(super) fn hit() -> Value {
    object(&[
        ("doc_id", string()),
        ("path", string()),
        ("start_line", integer()),
        ("end_line", integer()),
        ("text", string()),
        ("score", number()),
    ])
}

pub(super) fn citation() -> Value {
    object(&[
        ("n", integer()),
        ("path", string()),
        ("doc_id", string()),
        ("start_line", integer()),
        ("end_line", integer()),
        ("text", string()),
    ])
}

pub(super) fn answer() -> Value {
    object(&[
        ("answer", string()),
        ("citations", array_of(citation())),
        ("abstained", boolean()),
        ("prompt_tokens", integer()),
        ("generated_tokens", integer()),
        ("stop_reason", string()),
    ])
}

pub(super) fn index_status() -> Value {
    let mut s = object(&[
        ("documents", integer()),
        ("chunks", integer()),
        ("data_dir", string()),
        ("indexing", boolean()),
        ("queue", integer()),
        ("problem_count", integer()),
        ("problems", any_object()),
    ]);
    // Only for an index on object storage (`--data-dir s3://…`).
    s["properties"]["store"] = object(&[
        ("uri", string()),
        ("role", string()),
        ("version", integer()),
        ("checked_secs_ago", json!({"type": ["number", "null"]})),
        ("rows_applied", integer()),
        ("documents_applied", integer()),
        ("rebuilds", integer()),
        ("checks", integer()),
    ]);
    s
}

pub(super) fn document_text() -> Value {
    object(&[
        ("path", string()),
        ("format", string()),
        ("title", nullable("string")),
        (
            "pages",
            array_of(object(&[("page", integer()), ("start_line", integer())])),
        ),
        ("headings", array_of(any_object())),
        ("lines", integer()),
        ("text", string()),
    ])
}

pub(super) fn chat_completion() -> Value {
    let message = object(&[
        ("role", string()),
        ("content", string()),
        ("annotations", array_of(any_object())),
    ]);
    object(&[
        ("id", string()),
        ("object", string()),
        ("created", integer()),
        ("model", string()),
        (
            "choices",
            array_of(object(&[
                ("index", integer()),
                ("message", message),
                ("finish_reason", string()),
            ])),
        ),
        (
            "usage",
            object(&[
                ("prompt_tokens", integer()),
                ("completion_tokens", integer()),
                ("total_tokens", integer()),
            ]),
        ),
        ("sources", array_of(any_object())),
    ])
}

pub(super) fn model() -> Value {
    object(&[
        ("id", string()),
        ("object", string()),
        ("created", integer()),
        ("owned_by", string()),
    ])
}

pub(super) fn embeddings() -> Value {
    let embedding = object(&[
        ("object", string()),
        ("index", integer()),
        ("embedding", json!({"type": ["array", "string"]})),
    ]);
    object(&[
        ("object", string()),
        ("data", array_of(embedding)),
        ("model", string()),
        ("usage", any_object()),
    ])
}

pub(super) fn kept_answer() -> Value {
    object(&[
        ("answer_id", string()),
        ("created", integer()),
        ("question", string()),
        ("model", string()),
        ("passages", array_of(any_object())),
        ("answer", string()),
        ("abstained", boolean()),
    ])
}

pub(super) fn report() -> Value {
    object(&[
        ("window", any_object()),
        ("totals", any_object()),
        ("days", array_of(any_object())),
    ])
}
