//! Templates and expressions, by minijinja: a step's input is JSON whose strings are
//! templates; `when`, `for_each` and `repeat.until` are expressions.
//!
//! A model may write templates (the steps a dynamic step adds), so every render is
//! bounded: in instructions (minijinja's fuel, which also bounds its time), and in the
//! bytes a string template writes and an expression yields. Filters whose one call can
//! allocate without bound (`indent`, `format`, `center` widths) are not offered.

use std::io::Write;

use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;
use serde_json::Value;

/// Instructions one template or expression may run: far more than any workflow's
/// templates need, and a few milliseconds of work.
const FUEL: u64 = 50_000;

/// Most bytes one input (all its templates together) may render to, or one expression
/// yield as JSON.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

/// Filters left out: one call can allocate as much as its argument asks.
const UNBOUNDED_FILTERS: [&str; 3] = ["indent", "format", "center"];

/// The one environment: strict, so a missing value is an error rather than an empty string,
/// and bounded in fuel.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    for filter in UNBOUNDED_FILTERS {
        env.remove_filter(filter);
    }
    env
}

/// A writer that refuses to hold more than `left` bytes, shared by every template of one
/// input (so many small templates cannot add up past the bound either).
struct Bounded<'a> {
    out: Vec<u8>,
    left: &'a mut usize,
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > *self.left {
            return Err(std::io::Error::other("too long"));
        }
        *self.left -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn too_large() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("it renders to more than {MAX_RENDERED_BYTES} bytes"),
    )
}

/// Renders one string template, at most `left` bytes of it.
fn render_text<S: Serialize + ?Sized>(
    env: &Environment<'_>,
    text: &str,
    context: &S,
    left: &mut usize,
) -> Result<String, Error> {
    let template = env.template_from_str(text)?;
    let mut out = Bounded {
        out: Vec::new(),
        left,
    };
    template
        .render_captured_to(context, &mut out)
        .map_err(|e| {
            if e.kind() == ErrorKind::WriteFailure {
                too_large()
            } else {
                e
            }
        })?;
    String::from_utf8(out.out).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))
}

/// Renders `input` against `context`, at most [`MAX_RENDERED_BYTES`] in all. A string that
/// is exactly one `{{ expression }}` keeps the expression's JSON type (a list stays a
/// list); other strings render as text. `context` is anything serializable: a
/// [`minijinja::Value`] built once serves many renders without being converted again.
pub fn render<S: Serialize + ?Sized>(
    input: &Value,
    context: &S,
) -> Result<Value, minijinja::Error> {
    let env = environment();
    let mut left = MAX_RENDERED_BYTES;
    render_with(&env, input, context, &mut left)
}

fn render_with<S: Serialize + ?Sized>(
    env: &Environment<'_>,
    input: &Value,
    context: &S,
    left: &mut usize,
) -> Result<Value, minijinja::Error> {
    Ok(match input {
        Value::String(text) => match whole_expression(text) {
            Some(expr) => evaluate(env, expr, context, left)?,
            None => Value::String(render_text(env, text, context, left)?),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_with(env, i, context, left))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_with(env, v, context, left)?)))
                .collect::<Result<_, minijinja::Error>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluates a whole-string expression to JSON (at most `left` bytes of it); an undefined
/// result is an error, as it is in a template.
fn evaluate<S: Serialize + ?Sized>(
    env: &Environment<'_>,
    expr: &str,
    context: &S,
    left: &mut usize,
) -> Result<Value, Error> {
    let value = env.compile_expression(expr)?.eval(context)?;
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            format!("`{expr}` is undefined"),
        ));
    }
    let mut out = Bounded {
        out: Vec::new(),
        left,
    };
    serde_json::to_writer(&mut out, &value).map_err(|e| {
        if e.is_io() {
            too_large()
        } else {
            Error::new(ErrorKind::BadSerialization, e.to_string())
        }
    })?;
    serde_json::from_slice(&out.out)
        .map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))
}

/// `{{ x }}` alone (ignoring surrounding space) → `x`.
pub(crate) fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

/// Evaluates an expression as a condition.
pub fn truthy(expression: &str, context: &Value) -> Result<bool, minijinja::Error> {
    Ok(environment()
        .compile_expression(expression)?
        .eval(context)?
        .is_true())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn whole_expressions_keep_their_type() {
        let context = json!({"inputs": {"topic": "streams", "items": [1, 2]}, "item": 3});
        let input = json!({"text": "about {{ inputs.topic }}", "list": "{{ inputs.items }}", "n": "{{ item }}", "fixed": 7});
        assert_eq!(
            render(&input, &context).unwrap(),
            json!({"text": "about streams", "list": [1, 2], "n": 3, "fixed": 7})
        );
    }

    #[test]
    fn missing_values_are_errors() {
        assert!(render(&json!("{{ inputs.nope }}"), &json!({"inputs": {}})).is_err());
    }

    #[test]
    fn a_render_is_bounded_in_work_and_size() {
        let context = json!({});
        let nested =
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
        let started = std::time::Instant::now();
        let spent = render(&json!(nested), &context).unwrap_err();
        assert_eq!(spent.kind(), ErrorKind::OutOfFuel, "{spent}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let huge = render(&json!("{{ 'x' * 2000000 }} and more"), &context).unwrap_err();
        assert!(huge.to_string().contains("more than"), "{huge}");
        let yielded = render(&json!("{{ 'x' * 2000000 }}"), &context).unwrap_err();
        assert!(yielded.to_string().contains("more than"), "{yielded}");
        // Many templates that are each small add up to the same bound.
        let context = json!({"doc": "y".repeat(200_000)});
        let many = json!([
            "{{ doc }}",
            "{{ doc }}",
            "{{ doc }}",
            "{{ doc }}",
            "{{ doc }}",
            "a {{ doc }}"
        ]);
        let summed = render(&many, &context).unwrap_err();
        assert!(summed.to_string().contains("more than"), "{summed}");
        let wide = render(&json!("{{ 'a' | indent(1000000000000) }}"), &context).unwrap_err();
        assert_eq!(wide.kind(), ErrorKind::UnknownFilter, "{wide}");
    }

    #[test]
    fn conditions() {
        let context = json!({"output": {"approved": true}, "round": 2});
        assert!(truthy("output.approved", &context).unwrap());
        assert!(!truthy("round > 3", &context).unwrap());
    }
}
