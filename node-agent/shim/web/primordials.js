// Array, Map and Set methods captured when the shim loads (at snapshot time, before any
// worker code runs) and called as plain functions. Intrinsics are not frozen, so a worker
// may replace Array.prototype.push in its own isolate; the platform's bookkeeping must
// keep working on that worker's next request all the same.
// (String, TypedArray and Promise methods are still looked up: the hot byte and string
// loops would pay for every indirection, and replacing those breaks the worker's own code.)
const uncurry = Function.prototype.bind.bind(Function.prototype.call);

const A = Array.prototype;
export const ArrayPush = uncurry(A.push);
export const ArrayShift = uncurry(A.shift);
export const ArrayPop = uncurry(A.pop);
export const ArrayUnshift = uncurry(A.unshift);
export const ArraySlice = uncurry(A.slice);
export const ArraySplice = uncurry(A.splice);
export const ArrayMap = uncurry(A.map);
export const ArrayFilter = uncurry(A.filter);
export const ArraySome = uncurry(A.some);
export const ArrayFind = uncurry(A.find);
export const ArrayFindIndex = uncurry(A.findIndex);
export const ArrayIncludes = uncurry(A.includes);
export const ArrayJoin = uncurry(A.join);
export const ArraySort = uncurry(A.sort);

const M = Map.prototype;
export const MapGet = uncurry(M.get);
export const MapSet = uncurry(M.set);
export const MapHas = uncurry(M.has);
export const MapDelete = uncurry(M.delete);

const S = Set.prototype;
export const SetAdd = uncurry(S.add);
export const SetHas = uncurry(S.has);
export const SetDelete = uncurry(S.delete);

export const ReflectApply = Reflect.apply;
export const fromCharCode = String.fromCharCode;
