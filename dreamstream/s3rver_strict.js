#!/usr/bin/env node
// s3rver with the conditional writes real S3 has and tansu's S3 engine relies on.
//
// tansu keeps each partition's high watermark in an object it updates with a
// compare-and-swap PUT (If-Match: <etag>, or If-None-Match: * for the first
// write), and writes every record batch with If-None-Match: *. s3rver 3.x
// ignores both headers, so after a broker restart tansu's first produce to a
// partition (it has not read the watermark yet) reset the watermark to 0 and
// wrote new batches over acknowledged ones, and two concurrent produces to a
// partition could take the same offset. Refusing those PUTs with 412, as S3
// does, makes tansu re-read the watermark instead. Writes to one key are
// serialized so the check and the write are atomic.
//
// Usage: node s3rver_strict.js <s3rver package dir> <data dir> <address> <port> <bucket>
'use strict';

const path = require('path');

const [, , pkgDir, directory, address, port, bucket] = process.argv;
const S3rver = require(pkgDir);
const S3Error = require(path.join(pkgDir, 'lib', 'models', 'error'));
const objectCtrl = require(path.join(pkgDir, 'lib', 'controllers', 'object'));

const tails = new Map(); // "bucket/key" -> promise that settles when the last write to it is done

function oneAtATime(name, task) {
  const previous = tails.get(name) || Promise.resolve();
  const run = previous.then(task, task);
  const tail = run.then(() => undefined, () => undefined);
  tails.set(name, tail);
  tail.then(() => {
    if (tails.get(name) === tail) tails.delete(name);
  });
  return run;
}

const bare = etag => etag.replace(/^W\//, '').replace(/"/g, '');

async function currentEtag(store, bucketName, key) {
  try {
    return (await store.getMetadata(bucketName, key)).etag;
  } catch (err) {
    if (err.code === 'ENOENT') return null;
    throw err;
  }
}

function refuse(condition) {
  throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', {
    Condition: condition,
  });
}

const putObject = objectCtrl.putObject;
objectCtrl.putObject = ctx => {
  const ifMatch = ctx.get('if-match');
  const ifNoneMatch = ctx.get('if-none-match');
  if (!ifMatch && !ifNoneMatch) return putObject(ctx);
  const { bucket: bucketName, key } = ctx.params;
  return oneAtATime(`${bucketName}/${key}`, async () => {
    const etag = await currentEtag(ctx.store, bucketName, key);
    if (ifNoneMatch && etag !== null && (ifNoneMatch.trim() === '*' || bare(ifNoneMatch) === bare(etag))) {
      refuse('If-None-Match');
    }
    if (ifMatch && (etag === null || (ifMatch.trim() !== '*' && bare(ifMatch) !== bare(etag)))) {
      refuse('If-Match');
    }
    return putObject(ctx);
  });
};

new S3rver({ directory, address, port: Number(port), silent: true, configureBuckets: [{ name: bucket, configs: [] }] })
  .run()
  .then(({ address: host, port: bound }) => console.log('s3rver (conditional writes) listening on %s:%d', host, bound))
  .catch(err => {
    console.error(err);
    process.exit(1);
  });
