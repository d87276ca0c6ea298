//! Following `$ref`s, and a small validator for the JSON Schema 2020-12 keywords the document
//! uses.

use serde_json::Value;

/// The video id `pattern`; the validator checks it with the service's own rule (other patterns
/// with a real regex engine, so a pattern that drifts from the service's rule shows).
pub const VIDEO_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// What a local `$ref` (`#/…`) names, if anything.
pub fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Follows a `$ref` (a response, parameter or header object) to what it names.
pub fn deref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(r) => deref(doc, resolve(doc, r).unwrap_or_else(|| panic!("{r}"))),
        None => value,
    }
}

/// Asserts that `value` fits `schema`, listing every mismatch.
pub fn assert_valid(doc: &Value, schema: &Value, value: &Value) {
    let mut errors = Vec::new();
    validate(doc, schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{value:#}\ndoes not fit {schema}:\n{errors:#?}"
    );
}

/// The JSON Schema 2020-12 keywords the document uses; annotations (description, examples,
/// contentMediaType…) are skipped, an unknown `format` or `pattern` is a test error.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return; // `true` or `{}`-like
    };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = resolve(doc, reference).unwrap_or_else(|| panic!("{reference}"));
        validate(doc, target, value, at, errors);
    }
    let mut fail = |why: String| errors.push(format!("{at}: {why}"));
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => panic!("type {other}"),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            other => panic!("type {other}"),
        };
        if !types.iter().any(|t| fits(t)) {
            fail(format!("{value} is not {types:?}"));
            return;
        }
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        fail(format!("{value} is not {expected}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        fail(format!("{value} is not one of {options:?}"));
    }
    if let Some(n) = value.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            fail(format!("{n} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            fail(format!("{n} is above the maximum"));
        }
    }
    if let Some(s) = value.as_str() {
        let chars = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| chars < m)
        {
            fail(format!("`{s}` is too short"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| chars > m)
        {
            fail(format!("`{s}` is too long"));
        }
        let format = schema.get("format").and_then(Value::as_str);
        let fits_format = match format {
            None | Some("uri-reference" | "binary") => true,
            Some("date-time") => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            Some("uuid") => uuid::Uuid::parse_str(s).is_ok(),
            Some("uri") => s.starts_with("http://") || s.starts_with("https://"),
            Some(other) => panic!("the validator does not know format `{other}`"),
        };
        if !fits_format {
            fail(format!("`{s}` is not a {}", format.unwrap_or_default()));
        }
        let pattern = schema.get("pattern").and_then(Value::as_str);
        let fits_pattern = match pattern {
            None => true,
            Some(VIDEO_ID_PATTERN) => video_transcoder::jobs::validate_video_id(s).is_ok(),
            Some(other) => regex::Regex::new(other)
                .unwrap_or_else(|e| panic!("pattern `{other}`: {e}"))
                .is_match(s),
        };
        if !fits_pattern {
            fail(format!(
                "`{s}` does not match {}",
                pattern.unwrap_or_default()
            ));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                fail(format!("`{name}` is missing"));
            }
        }
        for (name, member) in object {
            let path = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(doc, s, member, &path, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{at}: `{name}` is not in the schema"))
                }
                (None, Some(extra @ Value::Object(_))) => {
                    validate(doc, extra, member, &path, errors)
                }
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"), errors);
        }
    }
    let sub = |s: &Value| {
        let mut e = Vec::new();
        validate(doc, s, value, at, &mut e);
        e
    };
    for s in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        errors.extend(sub(s));
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array)
        && options.iter().all(|s| !sub(s).is_empty())
    {
        errors.push(format!("{at}: {value} fits none of anyOf"));
    }
    if let Some(negated) = schema.get("not")
        && sub(negated).is_empty()
    {
        errors.push(format!("{at}: {value} fits what `not` excludes: {negated}"));
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let results: Vec<Vec<String>> = options.iter().map(sub).collect();
        let fits = results.iter().filter(|e| e.is_empty()).count();
        if fits != 1 {
            errors.push(format!(
                "{at}: {value} fits {fits} of oneOf, not 1: {results:?}"
            ));
        }
    }
}
