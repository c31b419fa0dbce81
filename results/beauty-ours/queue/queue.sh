#!/usr/bin/env bash
# One worker of the training queue: takes the first job of runs/jobs.txt that is neither done
# (runs/<name>/metrics.json, or its results committed under results/<folder>/<name>/) nor
# claimed by a live worker, runs it (--resume when it has a checkpoint), repeats.
# Start one worker per core:  nohup bash runs/queue.sh A > runs/queue-A.log 2>&1 &
# NICE=19 (default 10) starts a background worker: its runs take only the CPU the others leave.
# jobs.txt lines: <name> <ec4srec train args...>   (blank lines and # comments ignored)
# A job with "--warm-start DIR" waits (is passed over) until DIR/warmup.pt exists. When the donor
# finished in an earlier checkout (its results are committed, its runs/ folder is gone), the job
# runs without --warm-start: it trains the warm-up itself, which gives the same numbers (the
# warm-up epochs are bit-identical to the donor's, docs/methods.md) at the warm-up's cost.
cd "$(dirname "$0")/.."
worker=$1; wait_pid=${2:-}
if [ -n "$wait_pid" ]; then while kill -0 "$wait_pid" 2>/dev/null; do sleep 20; done; fi
while true; do
  job=""; waiting=0
  while read -r name args; do
    [ -z "$name" ] && continue; [[ $name == \#* ]] && continue
    [ -f "runs/$name/metrics.json" ] && continue
    compgen -G "results/*/$name/metrics.json" > /dev/null && continue   # committed results
    donor=$(sed -n 's/.*--warm-start \([^ ]*\).*/\1/p' <<< "$args")
    if [ -n "$donor" ] && [ ! -d "$donor" ] && [ -f "results/beauty-ours/$(basename "$donor")/metrics.json" ]; then
      args=$(sed "s| --warm-start $donor||" <<< "$args"); donor=""
    fi
    if [ -n "$donor" ] && [ ! -f "runs/$name/checkpoint.pt" ] && [ ! -f "$donor/warmup.pt" ]; then
      waiting=1; continue
    fi
    claim="runs/$name.claim"
    if mkdir "$claim" 2>/dev/null; then echo $$ > "$claim/pid"; job="$name"; jargs="$args"; break; fi
    pid=$(cat "$claim/pid" 2>/dev/null)
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then   # stale claim of a dead worker
      rm -rf "$claim"; if mkdir "$claim" 2>/dev/null; then echo $$ > "$claim/pid"; job="$name"; jargs="$args"; break; fi
    fi
  done < runs/jobs.txt
  if [ -z "$job" ]; then
    [ "$waiting" = 1 ] && { sleep 60; continue; }
    echo "$(date -u +%FT%TZ) worker $worker: queue empty"; exit 0
  fi
  if [ -f "runs/$job/checkpoint.pt" ]; then
    cmd=(ec4srec train --output "runs/$job" --resume --set train.threads=1 --set train.progress=off)
  else
    rm -rf "runs/$job"       # a run killed before its first checkpoint starts again
    cmd=(ec4srec train $jargs --set train.threads=1 --set train.progress=off --output "runs/$job")
  fi
  echo "$(date -u +%FT%TZ) worker $worker: start $job (nice ${NICE:-10}) at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- ec4srec || echo '+dirty'): ${cmd[*]}"
  nice -n "${NICE:-10}" "${cmd[@]}" >> "runs/$job.log" 2>&1
  echo "$(date -u +%FT%TZ) worker $worker: end $job rc=$?"
  rm -rf "runs/$job.claim"
  [ -f "runs/$job/metrics.json" ] || { echo "worker $worker: $job has no metrics.json; stopping"; exit 1; }
done
