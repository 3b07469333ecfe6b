//! The L2 record: the JSON object Python pystackquery's `QueryState.to_dict` writes.

use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::pyjson;
use crate::state::{FetchStatus, QueryStatus, RawState};

/// One query's state as stored in L2.
///
/// Its JSON form is the Python library's record, field for field: `status` and
/// `fetch_status` as names (`"SUCCESS"`, `"IDLE"`), `data` as serde writes `T`, errors as
/// their messages, timestamps as Unix seconds in floats. A record read from Python may leave
/// out the optional fields.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use pystackquery_core::QueryStatus;
/// use pystackquery_core::storage::Record;
///
/// let text = r#"{"status": "SUCCESS", "fetch_status": "IDLE", "data": [1, 2],
///     "data_updated_at": 1700000000.5, "error": null}"#;
/// let record: Record<Vec<u32>> = Record::from_json(text).unwrap();
/// assert_eq!(record.status, QueryStatus::Success);
/// assert_eq!(record.data, Some(vec![1, 2]));
/// assert_eq!(
///     record.data_updated_at,
///     Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1700000000.5))
/// );
/// // Written as Python's `json.dumps` writes it.
/// assert!(record.to_json().unwrap().starts_with(r#"{"status": "SUCCESS", "fetch_status": "IDLE", "data": [1, 2], "#));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Record<T> {
    /// The query status.
    pub status: QueryStatus,
    /// The fetch status at the time of writing (the engine writes `IDLE`: a record describes
    /// data at rest, and no reader can join a fetch running in another process).
    pub fetch_status: FetchStatus,
    /// The data, if any.
    pub data: Option<T>,
    /// The last error's message.
    pub error: Option<String>,
    /// When the data was last written (the Unix epoch marks invalidated data).
    pub data_updated_at: Option<SystemTime>,
    /// When the last error happened.
    pub error_updated_at: Option<SystemTime>,
    /// Failed attempts since the last success.
    pub fetch_failure_count: u32,
    /// The last failed attempt's message.
    pub fetch_failure_reason: Option<String>,
}

/// Why a record could not be read or written.
///
/// # Examples
///
/// ```
/// use pystackquery_core::storage::{Record, RecordError};
///
/// let error = Record::<u32>::from_json(r#"{"status": "SUCCESS", "fetch_status": "IDLE", "data": "x"}"#).unwrap_err();
/// assert!(matches!(error, RecordError::Data { type_name: "u32", .. }));
/// assert!(matches!(Record::<u32>::from_json("[]").unwrap_err(), RecordError::Malformed(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The text is not JSON, or not an object of the record's shape.
    #[error("malformed record: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A status field holds an unknown name.
    #[error("unknown {field} {value:?}")]
    UnknownStatus {
        /// `status` or `fetch_status`.
        field: &'static str,
        /// The name found.
        value: String,
    },
    /// The `data` field does not decode as the query's data type.
    #[error("data does not decode as {type_name}: {source}")]
    Data {
        /// The requested data type.
        type_name: &'static str,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// The data could not be encoded as JSON.
    #[error("data does not encode as JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

impl<T: Serialize> Record<T> {
    /// The record as a JSON string, byte for byte what Python's `json.dumps` of the same
    /// state's `to_dict()` writes: `", "` and `": "` between items, every character outside
    /// printable ASCII escaped as `\uXXXX`, floats as Python's `repr` prints them
    /// (`1764066000.25`, `1e-05`, `1e+16`). A float that is not finite is written as `null`
    /// (Python would write `NaN` or `Infinity`, which are not JSON).
    ///
    /// # Errors
    ///
    /// [`RecordError::Encode`] when `T`'s serializer fails (for example a map whose keys are
    /// not strings).
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::storage::Record;
    ///
    /// let record: Record<String> = Record::from_json(r#"{"status": "SUCCESS", "fetch_status": "IDLE", "data": "café", "error": null}"#).unwrap();
    /// let text = record.to_json().unwrap();
    /// assert!(text.contains(r#""data": "caf\u00e9""#)); // non-ASCII escaped, as Python writes it
    /// ```
    pub fn to_json(&self) -> Result<String, RecordError> {
        let out = RecordOut {
            status: self.status.name(),
            fetch_status: self.fetch_status.name(),
            data: self.data.as_ref(),
            error: self.error.as_deref(),
            data_updated_at: self.data_updated_at.map(unix_seconds),
            error_updated_at: self.error_updated_at.map(unix_seconds),
            fetch_failure_count: self.fetch_failure_count,
            fetch_failure_reason: self.fetch_failure_reason.as_deref(),
        };
        pyjson::to_string(&out).map_err(RecordError::Encode)
    }
}

impl<T: DeserializeOwned> Record<T> {
    /// Parses a record.
    ///
    /// # Errors
    ///
    /// A [`RecordError`] saying what is wrong: not a JSON object, an unknown status, or data
    /// that does not decode as `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::storage::Record;
    ///
    /// assert!(Record::<u32>::from_json(r#"{"status": "SUCCESS", "fetch_status": "IDLE", "data": 1}"#).is_ok());
    /// assert!(Record::<u32>::from_json(r#"{"status": "DONE", "fetch_status": "IDLE"}"#).is_err()); // unknown status
    /// assert!(Record::<u32>::from_json(r#"{"status": "SUCCESS", "fetch_status": "IDLE", "data": "x"}"#).is_err()); // not a u32
    /// ```
    pub fn from_json(text: &str) -> Result<Self, RecordError> {
        // serde's derive would also read the fields from a JSON array; a record is an object.
        if !text.trim_start().starts_with('{') {
            return Err(RecordError::Malformed(not_an_object()));
        }
        let raw: RecordIn = serde_json::from_str(text).map_err(RecordError::Malformed)?;
        Self::from_raw(raw)
    }

    /// Reads a record from a JSON value (a dehydrated query's `state`), as
    /// [`from_json`](Self::from_json) reads it from text.
    pub(crate) fn from_value(value: serde_json::Value) -> Result<Self, RecordError> {
        if !value.is_object() {
            return Err(RecordError::Malformed(not_an_object()));
        }
        let raw: RecordIn = serde_json::from_value(value).map_err(RecordError::Malformed)?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RecordIn) -> Result<Self, RecordError> {
        let (status, fetch_status) = statuses(raw.status, raw.fetch_status)?;
        // A successful record always carries data (`null` is data for `Option` or `()`);
        // other statuses carry it only when it is not `null`.
        let data = if status == QueryStatus::Success || !raw.data.is_null() {
            let data = serde_json::from_value(raw.data).map_err(|source| RecordError::Data {
                type_name: std::any::type_name::<T>(),
                source,
            })?;
            Some(data)
        } else {
            None
        };
        Ok(Self {
            status,
            fetch_status,
            data,
            error: raw.error,
            data_updated_at: raw.data_updated_at.and_then(from_unix_seconds),
            error_updated_at: raw.error_updated_at.and_then(from_unix_seconds),
            fetch_failure_count: raw.fetch_failure_count,
            fetch_failure_reason: raw.fetch_failure_reason,
        })
    }
}

fn not_an_object() -> serde_json::Error {
    <serde_json::Error as serde::de::Error>::custom("a record is a JSON object")
}

fn statuses(
    status: String,
    fetch_status: Option<String>,
) -> Result<(QueryStatus, FetchStatus), RecordError> {
    let status = QueryStatus::from_name(&status)
        .ok_or(RecordError::UnknownStatus { field: "status", value: status })?;
    let fetch_status = match fetch_status {
        None => FetchStatus::Idle,
        Some(name) => FetchStatus::from_name(&name)
            .ok_or(RecordError::UnknownStatus { field: "fetch_status", value: name })?,
    };
    Ok((status, fetch_status))
}

/// What can be read of a record without knowing its data type: enough to check its shape and
/// to compare its age with another record's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RecordHead {
    pub(crate) data_updated_at: Option<SystemTime>,
}

impl RecordHead {
    /// Checks a record's shape (an object, known statuses, timestamps that are numbers)
    /// without reading its data.
    pub(crate) fn of(value: &serde_json::Value) -> Result<Self, RecordError> {
        if !value.is_object() {
            return Err(RecordError::Malformed(not_an_object()));
        }
        let raw = HeadIn::deserialize(value).map_err(RecordError::Malformed)?;
        statuses(raw.status, raw.fetch_status)?;
        Ok(Self { data_updated_at: raw.data_updated_at.and_then(from_unix_seconds) })
    }
}

#[derive(Serialize)]
struct RecordOut<'a, T> {
    status: &'static str,
    fetch_status: &'static str,
    data: Option<&'a T>,
    error: Option<&'a str>,
    data_updated_at: Option<f64>,
    error_updated_at: Option<f64>,
    fetch_failure_count: u32,
    fetch_failure_reason: Option<&'a str>,
}

/// The fields of a record other than its data (an unknown field, `data` included, is
/// skipped). Every field is read, to check its type as [`RecordIn`] would.
#[derive(Deserialize)]
#[allow(dead_code)]
struct HeadIn {
    status: String,
    #[serde(default)]
    fetch_status: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data_updated_at: Option<f64>,
    #[serde(default)]
    error_updated_at: Option<f64>,
    #[serde(default)]
    fetch_failure_count: u32,
    #[serde(default)]
    fetch_failure_reason: Option<String>,
}

#[derive(Deserialize)]
struct RecordIn {
    status: String,
    #[serde(default)]
    fetch_status: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data_updated_at: Option<f64>,
    #[serde(default)]
    error_updated_at: Option<f64>,
    #[serde(default)]
    fetch_failure_count: u32,
    #[serde(default)]
    fetch_failure_reason: Option<String>,
}

/// Seconds since the Unix epoch, as Python's `time.time()` gives them (0.0 before the epoch).
pub(crate) fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The instant `seconds` after the Unix epoch; `None` for negative, infinite or NaN values.
pub(crate) fn from_unix_seconds(seconds: f64) -> Option<SystemTime> {
    Duration::try_from_secs_f64(seconds).ok().and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
}

/// How the engine turns one data type into records and back: monomorphic functions chosen
/// where `T: Serialize + DeserializeOwned` is known (in `QueryOptions::persist`), so the
/// engine itself needs no serde bound. Text for L2, JSON values for dehydrated states.
pub(crate) struct Codec<T> {
    pub(crate) encode: fn(&RawState<T>) -> Result<String, RecordError>,
    pub(crate) decode: fn(&str) -> Result<Record<T>, RecordError>,
    pub(crate) encode_value: fn(&RawState<T>) -> Result<serde_json::Value, RecordError>,
    pub(crate) decode_value: fn(serde_json::Value) -> Result<Record<T>, RecordError>,
}

impl<T> Clone for Codec<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Codec<T> {}

/// How a query finds its codec: one function pointer (8 bytes) instead of the four the codec
/// holds.
pub(crate) type CodecFn<T> = fn() -> Codec<T>;

impl<T: Serialize + DeserializeOwned> Codec<T> {
    pub(crate) fn serde() -> Self {
        Self {
            encode: encode_state::<T>,
            decode: Record::<T>::from_json,
            encode_value: encode_state_value::<T>,
            decode_value: Record::<T>::from_value,
        }
    }
}

/// Encodes a state without cloning its data.
fn encode_state<T: Serialize>(state: &RawState<T>) -> Result<String, RecordError> {
    with_record_out(state, |out| pyjson::to_string(out)).map_err(RecordError::Encode)
}

/// Encodes a state as a JSON value without cloning its data.
fn encode_state_value<T: Serialize>(state: &RawState<T>) -> Result<serde_json::Value, RecordError> {
    with_record_out(state, |out| serde_json::to_value(out)).map_err(RecordError::Encode)
}

fn with_record_out<T: Serialize, R>(
    state: &RawState<T>,
    write: impl FnOnce(&RecordOut<'_, T>) -> R,
) -> R {
    let error = state.error().map(ToString::to_string);
    let reason = state.fetch_failure_reason().map(ToString::to_string);
    let out = RecordOut {
        status: state.status.name(),
        fetch_status: FetchStatus::Idle.name(),
        data: state.data.as_ref(),
        error: error.as_deref(),
        // An invalidated state is written with the Python library's mark for it, 0.0, so
        // that every process, Python ones included, reads it as stale.
        data_updated_at: if state.is_invalidated && state.data.is_some() {
            Some(0.0)
        } else {
            state.data_updated_at.map(unix_seconds)
        },
        error_updated_at: state.error_updated_at().map(unix_seconds),
        fetch_failure_count: state.fetch_failure_count(),
        fetch_failure_reason: reason.as_deref(),
    };
    write(&out)
}
