//! Redis key names. Everything MindBus writes lives under one configurable prefix.

/// The key names under a prefix (default `mindbus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:cmd:{<role>}`: one role's commands. The braces are a Redis Cluster hash
    /// tag: every stream of a role, and every key a finish touches, is in the role's slot.
    pub fn commands(&self, role: &str) -> String {
        self.stream(Stream::Commands, role)
    }

    /// `<prefix>:result:{<role>}`: the results of one role's commands.
    pub fn results(&self, role: &str) -> String {
        self.stream(Stream::Results, role)
    }

    /// `<prefix>:event:{<role>}`: one role's lifecycle and progress events.
    pub fn events(&self, role: &str) -> String {
        self.stream(Stream::Events, role)
    }

    /// `<prefix>:dlq:{<role>}`: one role's dead letters.
    pub fn dead_letters(&self, role: &str) -> String {
        self.stream(Stream::DeadLetters, role)
    }

    /// `<prefix>:<kind>:{<role>}`: one of a role's streams.
    pub fn stream(&self, kind: Stream, role: &str) -> String {
        format!("{}:{}:{{{role}}}", self.prefix, kind.as_str())
    }

    /// Every stream of `role`, in display order.
    pub fn role_streams(&self, role: &str) -> [String; 4] {
        Stream::ALL.map(|kind| self.stream(kind, role))
    }

    /// A pattern that matches every stream of every role, for `SCAN` (it matches more:
    /// [`Keys::parse_stream`] tells which are).
    pub fn role_streams_pattern(&self) -> String {
        format!("{}:*:{{*}}", self.prefix)
    }

    /// Which of a role's streams `stream` is, and the role's name (a valid one).
    pub fn parse_stream<'a>(&self, stream: &'a str) -> Option<(Stream, &'a str)> {
        let rest = stream
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?;
        let (kind, tagged) = rest.split_once(':')?;
        let kind = Stream::ALL.into_iter().find(|k| k.as_str() == kind)?;
        let role = tagged.strip_prefix('{')?.strip_suffix('}')?;
        validate_role(role).is_ok().then_some((kind, role))
    }

    /// The role a stream of a role belongs to.
    pub fn role_of<'a>(&self, stream: &'a str) -> Option<&'a str> {
        self.parse_stream(stream).map(|(_, role)| role)
    }

    /// The role whose command stream `stream` is.
    pub fn commands_role<'a>(&self, stream: &'a str) -> Option<&'a str> {
        match self.parse_stream(stream)? {
            (Stream::Commands, role) => Some(role),
            _ => None,
        }
    }

    /// `<prefix>:roles`: the registry of roles, a set each agent adds its role to when it
    /// creates its group, so a role can be looked up without scanning the keyspace.
    pub fn roles(&self) -> String {
        format!("{}:roles", self.prefix)
    }

    /// `<prefix>:steproles`: the roles the orchestrators have sent steps to (a set), whose
    /// result streams carry their group.
    pub fn step_roles(&self) -> String {
        format!("{}:steproles", self.prefix)
    }

    /// `<prefix>:control`: broadcast to every agent (cancellations), read without a group.
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// `<prefix>:reply:{<role>}:<token>`: a client's private reply stream for commands of
    /// `role`, in the role's slot so the finish that writes it touches one slot only.
    pub fn reply(&self, role: &str, token: &str) -> String {
        format!("{}:reply:{{{role}}}:{token}", self.prefix)
    }

    /// Checks the `replyto` of a command of `role`: it must name a reply stream of that
    /// role, `<prefix>:reply:{<role>}:<token>` with a token of 1 to 128 of
    /// `A-Z a-z 0-9 . _ -`, so a command can never make an agent write to (let alone cap or
    /// expire) a stream of the mesh, nor of a mesh whose prefix nests under this one (no `:`
    /// or braces in the token).
    pub fn check_reply(&self, key: &str, role: &str) -> Result<(), String> {
        let token = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(":reply:{"))
            .and_then(|rest| rest.strip_prefix(role))
            .and_then(|rest| rest.strip_prefix("}:"));
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        match token {
            Some(token) if (1..=128).contains(&token.len()) && token.chars().all(ok_char) => Ok(()),
            _ => Err(format!(
                "`{key}` is not a reply stream of role `{role}`: it must be \
                 `{}:reply:{{{role}}}:` and a token of 1 to 128 of A-Z a-z 0-9 . _ -",
                self.prefix
            )),
        }
    }

    /// `<prefix>:done:{<role>}:<idempotency key>`: set once the result of a command of `role`
    /// with that `idempotencykey` is accepted. The braces keep it in its command stream's
    /// Redis Cluster slot.
    pub fn done(&self, role: &str, idempotency_key: &str) -> String {
        format!("{}:done:{{{role}}}:{idempotency_key}", self.prefix)
    }

    /// `<prefix>:llm:{usage}:run:<run id>`: a run's LLM totals (`calls`, `tokens_in`,
    /// `tokens_out`, `cost_micros`), kept by the LLM roles. Every usage key shares the
    /// `{usage}` hash tag: one script reserves against several of them at once, so they
    /// must be in one Redis Cluster slot.
    pub fn run_usage(&self, run_id: &str) -> String {
        format!("{}:llm:{{usage}}:run:{run_id}", self.prefix)
    }

    /// `<prefix>:llm:{usage}:tenant:<tenant>:<UTC day>`: one tenant's LLM totals for a day.
    pub fn tenant_usage(&self, tenant: &str, day: &str) -> String {
        format!("{}:llm:{{usage}}:tenant:{tenant}:{day}", self.prefix)
    }

    /// `<prefix>:llm:{usage}:day:<UTC day>`: the deployment's LLM totals for a day.
    pub fn daily_usage(&self, day: &str) -> String {
        format!("{}:llm:{{usage}}:day:{day}", self.prefix)
    }

    /// `<prefix>:llm:{limit}:<scope>:<what>`: a shared rate limit's state (GCRA), `what`
    /// being `requests` or `tokens`. The `{limit}` hash tag keeps every limit in one
    /// Redis Cluster slot: one script checks a call's limits together.
    pub fn llm_limit(&self, scope: &str, what: &str) -> String {
        format!("{}:llm:{{limit}}:{scope}:{what}", self.prefix)
    }

    /// `<prefix>:llm:cache:<digest>`: a cached LLM answer.
    pub fn llm_cache(&self, digest: &str) -> String {
        format!("{}:llm:cache:{digest}", self.prefix)
    }

    /// `<prefix>:idem:<caller>:<key digest>`: the gateway's slot for one API key's
    /// `Idempotency-Key`.
    pub fn idempotency(&self, caller: &str, key_digest: &str) -> String {
        format!("{}:idem:{caller}:{key_digest}", self.prefix)
    }

    /// `<prefix>:sent:<command id>`: the role of a command the gateway published.
    pub fn sent(&self, id: &str) -> String {
        format!("{}:sent:{id}", self.prefix)
    }
}

/// The streams every role has, each under the role's hash tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Commands to the role (`cmd`).
    Commands,
    /// Results of its commands (`result`).
    Results,
    /// Lifecycle and progress events of its commands (`event`).
    Events,
    /// Its dead letters (`dlq`).
    DeadLetters,
}

impl Stream {
    /// Every kind, in display order.
    pub const ALL: [Stream; 4] = [
        Stream::Commands,
        Stream::Results,
        Stream::Events,
        Stream::DeadLetters,
    ];

    /// The kind's part of the key.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Commands => "cmd",
            Stream::Results => "result",
            Stream::Events => "event",
            Stream::DeadLetters => "dlq",
        }
    }
}

impl serde::Serialize for Stream {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Checks a role name: lower-case letters, digits, `-` and `_`, 1 to 64 characters.
pub fn validate_role(role: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if role.is_empty() || role.len() > 64 || !role.chars().all(ok_char) {
        return Err(format!(
            "role `{role}` must be 1 to 64 of a-z, 0-9, `-` and `_`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_stream_names_round_trip() {
        let keys = Keys::new("mb");
        assert_eq!(keys.commands("echo"), "mb:cmd:{echo}");
        assert_eq!(
            keys.role_streams("echo"),
            [
                "mb:cmd:{echo}",
                "mb:result:{echo}",
                "mb:event:{echo}",
                "mb:dlq:{echo}"
            ]
        );
        for kind in Stream::ALL {
            assert_eq!(
                keys.parse_stream(&keys.stream(kind, "w-1")),
                Some((kind, "w-1"))
            );
        }
        assert_eq!(keys.commands_role("mb:cmd:{echo}"), Some("echo"));
        assert_eq!(keys.commands_role("mb:result:{echo}"), None);
        for other in [
            "other:cmd:{echo}",
            "mb:result",
            "mb:reply:{echo}:x",
            "mb:cmd:echo",
            "mb:cmd:{a}{b}",
            "mb:cmd:{}",
            "mb:cmd:{Echo}",
            "mbx:cmd:{echo}",
        ] {
            assert_eq!(keys.parse_stream(other), None, "{other}");
        }
    }

    #[test]
    fn only_reply_streams_of_the_role_are_replies() {
        let keys = Keys::new("mb");
        assert!(keys.check_reply("mb:reply:{echo}:abc", "echo").is_ok());
        assert!(
            keys.check_reply(&keys.reply("echo", "a.b_c-1"), "echo")
                .is_ok()
        );
        for bad in [
            "mb:event:{echo}",
            "mb:result:{echo}",
            "mb:cmd:{echo}",
            "mb:reply:{echo}:",
            "mb:reply:{other}:abc",
            "mb:reply:abc",
            "other:reply:{echo}:x",
            "mb:reply:{echo}x",
            "mb:reply:{echo}:b:cmd:{echo}",
            "mb:reply:{echo}:{echo}",
        ] {
            assert!(keys.check_reply(bad, "echo").is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_are_checked() {
        assert!(validate_role("writer-2").is_ok());
        for bad in ["", "Writer", "a b", "x}"] {
            assert!(validate_role(bad).is_err(), "{bad}");
        }
    }
}
