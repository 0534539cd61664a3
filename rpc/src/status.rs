//! Status codes: how every call fails.

use std::borrow::Cow;
use std::fmt;

/// A status code. The numbers are gRPC's, so that operators read them at a
/// glance; slot 12 (gRPC's UNIMPLEMENTED) is [`Code::UnknownMethod`].
///
/// ```
/// use quicall_rpc::Code;
/// assert_eq!(Code::from_u16(14), Code::Unavailable);
/// assert!(Code::Unavailable.is_transient());
/// assert!(!Code::InvalidArgument.is_transient());
/// assert_eq!(Code::from_u16(999), Code::Unknown);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Code {
    /// Success.
    Ok = 0,
    /// The caller cancelled the call.
    Cancelled = 1,
    /// An error with no better code (also any code this version does not know).
    Unknown = 2,
    /// The request is malformed: its body does not fit the method's type, or
    /// the header is invalid.
    InvalidArgument = 3,
    /// The deadline passed before an answer.
    DeadlineExceeded = 4,
    /// A requested entity was not found (for handlers).
    NotFound = 5,
    /// An entity to create exists already (for handlers).
    AlreadyExists = 6,
    /// The caller is authenticated but not allowed to make this call.
    PermissionDenied = 7,
    /// A limit was reached: message size, calls in flight, memory.
    ResourceExhausted = 8,
    /// The system is not in a state that allows the call (for handlers).
    FailedPrecondition = 9,
    /// The call was aborted, typically by a concurrency conflict (for handlers).
    Aborted = 10,
    /// An argument is out of the valid range (for handlers).
    OutOfRange = 11,
    /// The server has no method with this identifier.
    UnknownMethod = 12,
    /// A bug: the handler panicked, or an invariant broke.
    Internal = 13,
    /// The server cannot be reached or is shutting down; the connection broke.
    Unavailable = 14,
    /// Unrecoverable data loss (for handlers).
    DataLoss = 15,
    /// TLS authentication failed: no client certificate, or one from an
    /// untrusted CA, or the server's certificate is not trusted.
    Unauthenticated = 16,
}

impl Code {
    /// The code for a number received on the wire; numbers this version does
    /// not know become [`Code::Unknown`].
    pub fn from_u16(code: u16) -> Code {
        use Code::*;
        const ALL: [Code; 17] = [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            UnknownMethod,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ];
        ALL.get(usize::from(code)).copied().unwrap_or(Unknown)
    }

    /// The number sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Whether the failure may pass if the same call is sent again (to this or
    /// another server): the server was unavailable, overloaded or aborted.
    /// Whether a retry is *safe* also depends on whether the call may have
    /// run: see [`Status::is_retry_safe`].
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted
        )
    }

    /// The code's name in upper snake case, as in the specification.
    pub fn name(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "OK",
            Cancelled => "CANCELLED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            UnknownMethod => "UNKNOWN_METHOD",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed call: a code, a message for people, and whether the server
/// provably never started the handler.
///
/// ```
/// use quicall_rpc::{Code, Status};
/// let s = Status::new(Code::NotFound, "no such account");
/// assert_eq!(s.code(), Code::NotFound);
/// assert_eq!(s.to_string(), "NOT_FOUND: no such account");
/// assert!(!s.is_retry_safe(true));
/// assert!(Status::unavailable("draining").not_processed().is_retry_safe(false));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: Cow<'static, str>,
    not_processed: bool,
    /// The message is an error's own text (converted from another error
    /// type): a server told to keep internals sends a generic message
    /// instead, and logs this one.
    internal_detail: bool,
    /// Metadata the server sent back with the failure.
    metadata: Option<Box<crate::Metadata>>,
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            not_processed: false,
            internal_detail: false,
            metadata: None,
        }
    }

    /// The metadata the server sent back with this failure, if any (read
    /// by [`Client::call_full`](crate::Client::call_full)).
    pub fn metadata(&self) -> Option<&crate::Metadata> {
        self.metadata.as_deref()
    }

    /// The same status carrying `metadata`.
    pub fn with_metadata(mut self, metadata: crate::Metadata) -> Self {
        self.metadata = (!metadata.is_empty()).then(|| Box::new(metadata));
        self
    }

    /// INTERNAL with the text of `error` and its causes, marked as an
    /// internal detail: a server whose
    /// [`ServerOptions::hide_error_details`](crate::ServerOptions::hide_error_details)
    /// is set sends "internal error" instead and logs the text. What
    /// `From<anyhow::Error>` (feature `anyhow`) and a user's own `From`
    /// conversions may use.
    ///
    /// ```
    /// use quicall_rpc::{Code, Status};
    /// let io = std::io::Error::new(std::io::ErrorKind::Other, "disk on fire");
    /// let s = Status::from_error(&io);
    /// assert_eq!(s.code(), Code::Internal);
    /// assert_eq!(s.message(), "disk on fire");
    /// ```
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        let mut status = Self::new(Code::Internal, message);
        status.internal_detail = true;
        status
    }

    /// Whether the message is an error's own text (see [`Status::from_error`]).
    pub fn is_internal_detail(&self) -> bool {
        self.internal_detail
    }

    /// The same status (code, NOT_PROCESSED) told with another message.
    ///
    /// ```
    /// use quicall_rpc::{Code, Status};
    /// let s = Status::unavailable("closed").not_processed().with_message("server gone");
    /// assert_eq!(s.code(), Code::Unavailable);
    /// assert!(s.was_not_processed());
    /// assert_eq!(s.message(), "server gone");
    /// ```
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self.internal_detail = false;
        self
    }

    /// Marks the call as never started by a handler: it had no effect.
    pub fn not_processed(mut self) -> Self {
        self.not_processed = true;
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the server provably never started a handler for this call.
    pub fn was_not_processed(&self) -> bool {
        self.not_processed
    }

    /// Whether sending the call again is safe and may succeed: the failure is
    /// transient, and either the method is idempotent or the call never
    /// reached a handler.
    pub fn is_retry_safe(&self, idempotent: bool) -> bool {
        self.code.is_transient() && (idempotent || self.not_processed)
    }

    /// UNKNOWN.
    pub fn unknown(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Unknown, message)
    }
    /// ALREADY_EXISTS.
    pub fn already_exists(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::AlreadyExists, message)
    }
    /// FAILED_PRECONDITION.
    pub fn failed_precondition(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }
    /// ABORTED (transient: a retry may succeed).
    pub fn aborted(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Aborted, message)
    }
    /// OUT_OF_RANGE.
    pub fn out_of_range(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::OutOfRange, message)
    }
    /// DATA_LOSS.
    pub fn data_loss(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::DataLoss, message)
    }
    /// CANCELLED.
    pub fn cancelled(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Cancelled, message)
    }
    /// INVALID_ARGUMENT.
    pub fn invalid_argument(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    /// DEADLINE_EXCEEDED.
    pub fn deadline_exceeded(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::DeadlineExceeded, message)
    }
    /// NOT_FOUND.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::NotFound, message)
    }
    /// PERMISSION_DENIED.
    pub fn permission_denied(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::PermissionDenied, message)
    }
    /// RESOURCE_EXHAUSTED.
    pub fn resource_exhausted(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::ResourceExhausted, message)
    }
    /// UNKNOWN_METHOD.
    pub fn unknown_method(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::UnknownMethod, message)
    }
    /// INTERNAL.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Internal, message)
    }
    /// UNAVAILABLE.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Unavailable, message)
    }
    /// UNAUTHENTICATED.
    pub fn unauthenticated(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Status");
        d.field("code", &self.code).field("message", &self.message);
        if self.not_processed {
            d.field("not_processed", &true);
        }
        d.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

/// `anyhow::Error` into INTERNAL, with the error's chain as the message
/// (an internal detail: see [`Status::from_error`]). A handler may then
/// return `anyhow::Result`.
#[cfg(feature = "anyhow")]
impl From<anyhow::Error> for Status {
    fn from(error: anyhow::Error) -> Self {
        // `{:#}` is the error and its causes on one line.
        let mut status = Self::new(Code::Internal, format!("{error:#}"));
        status.internal_detail = true;
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for n in 0..=16u16 {
            assert_eq!(Code::from_u16(n).as_u16(), n);
        }
        assert_eq!(Code::from_u16(17), Code::Unknown);
        assert_eq!(Code::from_u16(u16::MAX), Code::Unknown);
    }

    #[test]
    fn every_code_has_a_constructor() {
        let made = [
            Status::cancelled(""),
            Status::unknown(""),
            Status::invalid_argument(""),
            Status::deadline_exceeded(""),
            Status::not_found(""),
            Status::already_exists(""),
            Status::permission_denied(""),
            Status::resource_exhausted(""),
            Status::failed_precondition(""),
            Status::aborted(""),
            Status::out_of_range(""),
            Status::unknown_method(""),
            Status::internal(""),
            Status::unavailable(""),
            Status::data_loss(""),
            Status::unauthenticated(""),
        ];
        for (n, status) in (1..=16u16).zip(made) {
            assert_eq!(status.code().as_u16(), n);
        }
    }

    #[test]
    fn errors_become_internal_with_their_causes() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("saving the record")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("disk full"));
        let s = Status::from_error(&e);
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "saving the record: disk full");
        assert!(s.is_internal_detail());
        assert!(!Status::internal("x").is_internal_detail());
    }

    #[test]
    fn retry_safety() {
        let unavailable = Status::unavailable("connection lost");
        assert!(unavailable.is_retry_safe(true));
        assert!(!unavailable.is_retry_safe(false));
        assert!(unavailable.clone().not_processed().is_retry_safe(false));
        assert!(
            !Status::internal("panic")
                .not_processed()
                .is_retry_safe(true)
        );
        assert!(!Status::deadline_exceeded("late").is_retry_safe(true));
    }
}
