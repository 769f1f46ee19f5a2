//! Relations and threads: `/relations` (the events relating to one event) and `/threads` (a
//! room's thread roots, most recently active first). Both find their events in the room's
//! relation index (`read_model/relations.rs`) and read them back by position, never walking the
//! timeline, and show only what the caller may see, as `/messages` does.

use serde::Deserialize;
use serde_json::{Value, json};

use super::events::client_event;
use super::rooms::{find_event, readable_until};
use super::sync::{position_in, room_token};
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::TimelineItem;

/// Results per page when the client names no limit.
const DEFAULT_LIMIT: usize = 50;
/// How deep `recurse=true` follows relations of relations (the spec asks for at least 3).
const MAX_DEPTH: usize = 3;
/// Most relating events one request considers (a reaction storm on one event is cut here).
const MAX_CANDIDATES: usize = 10_000;
/// Events a page may read back beyond its limit (redacted or invisible ones are skipped).
const EXTRA_READS: usize = 100;

#[derive(Deserialize)]
pub struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    dir: Option<String>,
    recurse: Option<String>,
}

fn parse_limit(limit: Option<&str>, max: usize) -> ApiResult<usize> {
    match limit {
        None => Ok(DEFAULT_LIMIT.min(max)),
        Some(text) => match text.parse::<usize>() {
            Ok(0) | Err(_) => Err(MatrixError::invalid_param("limit must be a positive integer")),
            Ok(n) => Ok(n.min(max)),
        },
    }
}

fn parse_token(token: Option<&str>, partition: u32) -> ApiResult<Option<u64>> {
    let invalid = || MatrixError::invalid_param("invalid pagination token");
    let Some(token) = token else { return Ok(None) };
    // A sync token names the position after the one it carries: refuse the one that would not
    // fit in a position before asking `position_in` to add one.
    let sync_position = token.strip_prefix('s').and_then(|rest| rest.split('~').next()).and_then(|p| p.split('_').nth(partition as usize));
    if sync_position.is_some_and(|p| p.parse::<u64>().map_or(true, |p| p == u64::MAX)) {
        return Err(invalid());
    }
    position_in(token, partition).map(Some).ok_or_else(invalid)
}

/// The item as shown still relates to something (a redacted relation no longer does).
fn still_relates(item: &TimelineItem) -> bool {
    item.event["content"]["m.relates_to"].is_object()
}

/// `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`.
pub async fn relations(
    app: &App,
    caller: &Caller,
    (room_id, event_id): (String, String),
    rel_type: Option<String>,
    event_type: Option<String>,
    query: RelationsQuery,
) -> ApiResult<Value> {
    let not_found = || MatrixError::not_found("Event not found");
    let backwards = match query.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        _ => return Err(MatrixError::invalid_param("dir must be 'b' or 'f'")),
    };
    let recurse = match query.recurse.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => return Err(MatrixError::invalid_param("recurse must be true or false")),
    };
    let limit = parse_limit(query.limit.as_deref(), app.config.limits.max_events_per_response)?;
    let partition = app.model.partition_of(&room_id);
    let from = parse_token(query.from.as_deref(), partition)?;
    let to = parse_token(query.to.as_deref(), partition)?;
    // Someone who may not read the room is told what they would be told of a missing event.
    let until = readable_until(app, &caller.user_id, &room_id).map_err(|_| not_found())?;
    let visible_from = app.model.with_room(&room_id, |room| room.visible_from(&caller.user_id)).unwrap_or(u64::MAX);
    let parent = match find_event(app, &room_id, &event_id).await? {
        Some(item) if item.seq <= until && item.seq >= visible_from => item,
        _ => return Err(not_found()),
    };
    let ceiling = until.min(app.model.applied(partition));
    let depth = if recurse == Some(true) { MAX_DEPTH } else { 1 };
    // The relating events, from the index: direct ones, then (recursing) theirs.
    let mut candidates: Vec<u64> = app
        .model
        .with_room(&room_id, |room| {
            let mut found = Vec::new();
            let mut level = vec![parent.seq];
            for _ in 0..depth {
                let mut next = Vec::new();
                for target in level {
                    for relation in room.relations.children(target) {
                        if found.len() >= MAX_CANDIDATES || next.len() >= MAX_CANDIDATES {
                            break;
                        }
                        next.push(relation.seq);
                        let wanted = rel_type.as_deref().is_none_or(|t| *relation.rel_type == *t)
                            && event_type.as_deref().is_none_or(|t| *relation.event_type == *t);
                        if wanted && relation.seq >= visible_from && relation.seq <= ceiling {
                            found.push(relation.seq);
                        }
                    }
                }
                level = next;
            }
            found
        })
        .unwrap_or_default();
    candidates.sort_unstable();
    candidates.dedup();
    // The page's range: going back, strictly before `from` and not before `to`; going forward,
    // from `from` on and strictly before `to`.
    let in_range = |seq: &u64| {
        if backwards {
            from.is_none_or(|from| *seq < from) && to.is_none_or(|to| *seq >= to)
        } else {
            from.is_none_or(|from| *seq >= from) && to.is_none_or(|to| *seq < to)
        }
    };
    let mut ordered: Vec<u64> = candidates.into_iter().filter(in_range).collect();
    if backwards {
        ordered.reverse();
    }
    let log = app.store.log();
    let mut chunk = Vec::new();
    let mut last = None;
    for (read, seq) in ordered.iter().enumerate() {
        if chunk.len() >= limit || read >= limit + EXTRA_READS {
            break;
        }
        last = Some(*seq);
        if let Some(item) = app.model.item_at(log, &room_id, *seq).await.map_err(MatrixError::unavailable)?
            && still_relates(&item)
        {
            chunk.push(client_event(&item, Some(caller)));
        }
    }
    let mut response = json!({ "chunk": chunk });
    if let Some(last) = last
        && ordered.last() != Some(&last)
    {
        response["next_batch"] = json!(room_token(if backwards { last } else { last + 1 }));
    }
    if let Some(from) = &query.from {
        response["prev_batch"] = json!(from);
    }
    if let Some(recurse) = recurse {
        response["recursion_depth"] = json!(if recurse { MAX_DEPTH } else { 1 });
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct ThreadsQuery {
    include: Option<String>,
    limit: Option<String>,
    from: Option<String>,
}

/// A thread as the index knows it, within what the caller may see.
struct ThreadSummary {
    latest_active: u64,
    root: u64,
    latest_reply: Option<u64>,
    count: usize,
    participated: bool,
}

/// `GET /rooms/{roomId}/threads`: thread roots, most recently active first, each with its
/// bundled `m.thread` aggregation (latest reply, count, whether the caller took part).
pub async fn threads(app: &App, caller: &Caller, room_id: String, query: ThreadsQuery) -> ApiResult<Value> {
    let participated_only = match query.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        _ => return Err(MatrixError::invalid_param("include must be 'all' or 'participated'")),
    };
    let limit = parse_limit(query.limit.as_deref(), app.config.limits.max_events_per_response)?;
    let partition = app.model.partition_of(&room_id);
    let from = parse_token(query.from.as_deref(), partition)?;
    let until = readable_until(app, &caller.user_id, &room_id)?;
    let ceiling = until.min(app.model.applied(partition));
    let scan = limit + EXTRA_READS;
    let (summaries, more) = app
        .model
        .with_room(&room_id, |room| {
            let visible_from = room.visible_from(&caller.user_id);
            let mut summaries = Vec::new();
            let mut more = false;
            for (latest, root) in room.relations.threads_before(from.unwrap_or(u64::MAX)) {
                if root < visible_from || root > ceiling {
                    continue;
                }
                if summaries.len() >= scan {
                    more = true;
                    break;
                }
                let replies: Vec<_> =
                    room.relations.children(root).iter().filter(|r| &*r.rel_type == "m.thread" && r.seq <= ceiling).collect();
                summaries.push(ThreadSummary {
                    latest_active: latest,
                    root,
                    latest_reply: replies.last().map(|r| r.seq),
                    count: replies.len(),
                    participated: replies.iter().any(|r| *r.sender == *caller.user_id),
                });
            }
            (summaries, more)
        })
        .ok_or_else(|| MatrixError::forbidden("You are not in this room"))?;
    let log = app.store.log();
    let mut chunk = Vec::new();
    let mut next = None;
    for (index, summary) in summaries.iter().enumerate() {
        if chunk.len() >= limit {
            next = Some(summaries[index - 1].latest_active);
            break;
        }
        let Some(root) = app.model.item_at(log, &room_id, summary.root).await.map_err(MatrixError::unavailable)? else {
            continue;
        };
        let participated = summary.participated || *root.sender == *caller.user_id;
        if participated_only && !participated {
            continue;
        }
        let mut event = client_event(&root, Some(caller));
        let latest = match summary.latest_reply {
            Some(seq) => app.model.item_at(log, &room_id, seq).await.map_err(MatrixError::unavailable)?,
            None => None,
        };
        if let Some(latest) = latest {
            event["unsigned"]["m.relations"]["m.thread"] = json!({
                "latest_event": client_event(&latest, Some(caller)),
                "count": summary.count,
                "current_user_participated": participated,
            });
        }
        chunk.push(event);
    }
    if next.is_none() && more {
        next = summaries.last().map(|s| s.latest_active);
    }
    let mut response = json!({ "chunk": chunk });
    if let Some(next) = next {
        response["next_batch"] = json!(room_token(next));
    }
    Ok(response)
}
